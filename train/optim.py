"""AdamW with decoupled weight decay (none on gains, biases and the logit scale) and a
cosine learning-rate schedule with linear warm-up; optionally torchao's 8-/4-bit states."""

from __future__ import annotations

import math

import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.tensor import DTensor

from train.config import TrainConfig
from wit.formats.errors import WitError


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Gains, biases, norms and the logit scale are not decayed (as in the paper's code)."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


class Optimization:
    """The optimizer and its learning-rate schedule: stepped together, checkpointed together
    (torchao's quantised states spelled out, so the checkpoint loads with weights_only=True;
    the state of a sharded model's optimizer as its DTensor shards keyed by parameter name,
    torch.distributed.checkpoint's form). On restore, the run's settings (lr, weight_decay,
    betas, eps; steps, warmup and min_lr through the schedule) replace the saved ones, from
    the restored step on."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LambdaLR,
                 cfg: TrainConfig, sharded: torch.nn.Module | None = None):
        self.optimizer, self.schedule, self.cfg = optimizer, schedule, cfg
        self.sharded = sharded   # the FSDP model whose shards the optimizer updates, if any

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> None:
        self.optimizer.step()
        self.schedule.step()

    def state_dict(self) -> dict:
        if self.sharded is not None:   # the state is created (zero, at lr 0) when there is none yet
            optimizer = get_optimizer_state_dict(self.sharded, self.optimizer)
        else:
            optimizer = plain_state(self.optimizer.state_dict())
        return {"optimizer": optimizer, "scheduler": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.sharded is not None:
            set_optimizer_state_dict(self.sharded, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(restore_state(state["optimizer"]))
        self.schedule.load_state_dict(state["scheduler"])
        cfg, step = self.cfg, self.schedule.last_epoch
        for group, decay in zip(self.optimizer.param_groups, (cfg.weight_decay, 0.0)):
            # computed as LambdaLR computes it (torchao keeps lr as a tensor, and so does LambdaLR then)
            old = group["initial_lr"]
            group["initial_lr"] = torch.full_like(old, cfg.lr) if isinstance(old, torch.Tensor) else cfg.lr
            lr = group["initial_lr"] * lr_factor(step, cfg)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
            group.update(weight_decay=decay, betas=cfg.betas, eps=cfg.eps)
        self.schedule.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]


def build(model: torch.nn.Module, cfg: TrainConfig) -> Optimization:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.optimizer_state == "fp32":
        optimizer = torch.optim.AdamW(groups, **kwargs)
    else:
        try:
            import torchao.optim
        except ImportError:
            raise WitError(f"optimizer_state={cfg.optimizer_state} needs torchao (pip install torchao)") from None
        cls = torchao.optim.AdamW8bit if cfg.optimizer_state == "8bit" else torchao.optim.AdamW4bit
        optimizer = cls(groups, **kwargs)
    sharded = model if any(isinstance(p, DTensor) for _, p in named) else None
    return Optimization(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg)), cfg,
                        sharded)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_lr` at `steps`."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def plain_state(value):
    """The optimizer state with torchao's quantised-state tensors spelled out as plain
    tensors, so the checkpoint loads with weights_only=True (OpenCLIP loads it so)."""
    if isinstance(value, dict):
        return {k: plain_state(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_state(v) for v in value]
    if isinstance(value, torch.Tensor) and type(value) not in (torch.Tensor, torch.nn.Parameter) \
            and hasattr(value, "__tensor_flatten__"):
        names, attrs = value.__tensor_flatten__()
        return {"__quantized_state__": type(value).__name__,
                "tensors": {n: getattr(value, n) for n in names}, "attrs": list(attrs)}
    return value


def restore_state(value):
    """Inverse of `plain_state`."""
    if isinstance(value, dict) and "__quantized_state__" in value:
        from torchao.optim import subclass_4bit, subclass_8bit
        cls = getattr(subclass_8bit, value["__quantized_state__"], None) or \
            getattr(subclass_4bit, value["__quantized_state__"])
        return cls.__tensor_unflatten__(value["tensors"], value["attrs"])
    if isinstance(value, dict):
        return {k: restore_state(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_state(v) for v in value]
    return value
