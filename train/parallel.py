"""How the model is spread over the ranks (`parallel`): `ddp`, every rank holding the whole
model and optimizer with the gradients all-reduced (DistributedDataParallel); or `fsdp`,
torch's `fully_shard` (FSDP2), every rank holding a 1/N shard of each parameter, of its
gradient and of its optimizer state, a unit's weights gathered for its forward and
backward only and its gradients reduce-scattered.

The units sharded one by one are the transformer blocks of both towers (a ResNet's
stages); the root takes the rest (embeddings, norms, projections, the logit scale). With
bf16 (`precision: bf16`, or `auto` on a GPU) the blocks are gathered and computed in bf16
with their gradients reduced in fp32 (FSDP's MixedPrecisionPolicy), while the root stays
fp32 like the sharded master weights; the stepper's autocast runs on top, as under DDP: it
leaves the blocks' bf16 matmuls as they are and keeps its fp32 ops (softmax, norms on a
GPU) and the root's ops as under DDP. With fp32 nothing is cast.

FSDP does not shard a 0-dim parameter: the logit scale (and a logit bias) become 1-element
parameters while sharded; the weights files (`full_state_dict`) hold them as OpenCLIP has
them. One process with `fsdp` joins a process group of one and shards over it, so that its
checkpoints are the same shards as a run on many."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable, ContextManager, Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from train import checkpoint
from train.config import TrainConfig
from train.dist import World
from train.eval.evaluator import Evaluator, NullEvaluator
from train.model import clip as models

SCALARS = "wit_scalar_parameters"   # attribute of a sharded model: its parameters that were 0-dim


def bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the run computes in bf16: `precision: bf16`, or `auto` on a GPU."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def shard(model: torch.nn.Module, cfg: TrainConfig, world: World) -> torch.nn.Module:
    """The model the optimizer is built on: with `fsdp`, sharded in place over the ranks
    (every unit of `units`, then the root); with `ddp`, the model as it is."""
    if cfg.parallel != "fsdp":
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    _join_group(world)
    scalars = []
    for name, module in model.named_modules():
        for key, param in list(module.named_parameters(recurse=False)):
            if param.ndim == 0:
                setattr(module, key, torch.nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))
                scalars.append(f"{name}.{key}".lstrip("."))
    mesh = init_device_mesh(world.device.type, (world.size,))
    blocks = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16(cfg, world.device) else MixedPrecisionPolicy())
    for unit in reversed(units(model)):   # the innermost first, as fully_shard needs
        fully_shard(unit, mesh=mesh, mp_policy=blocks)
    fully_shard(model, mesh=mesh)
    setattr(model, SCALARS, tuple(scalars))
    return model


def units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules sharded one by one: every block of a transformer (OpenCLIP's `resblocks`,
    timm's `blocks`) and every stage of a ResNet (`layer1`...); none found, the whole model
    is one unit (its optimizer state still sharded)."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("resblocks", "blocks") and isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            found.extend(module)
        elif re.fullmatch(r"layer\d+", leaf) and isinstance(module, torch.nn.Sequential):
            found.append(module)
    return found


def _join_group(world: World) -> None:
    """One process: a process group of one (torchrun's and srun's processes have theirs)."""
    if dist.is_initialized():
        return
    cuda = world.device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1,
                            device_id=world.device if cuda else None)


def wrap(model: torch.nn.Module, cfg: TrainConfig, world: World) -> torch.nn.Module:
    """What the stepper calls: DistributedDataParallel with `ddp` on several ranks; the model
    itself with one rank, and with `fsdp` (its own hooks gather the weights and reduce the
    gradients)."""
    if cfg.parallel == "ddp" and world.size > 1:
        return DistributedDataParallel(model)
    return model


def no_sync(wrapped: torch.nn.Module) -> ContextManager:
    """Backward passes in this block keep their gradients on the rank, to be reduced with
    the next synchronised one (gradient accumulation): DDP's `no_sync`, FSDP's
    `set_requires_gradient_sync(False)` (unsharded gradients accumulate: memory of a full
    gradient on each rank until the last micro-batch)."""
    inner = getattr(wrapped, "_orig_mod", wrapped)   # under torch.compile
    if hasattr(inner, "no_sync"):
        return inner.no_sync()
    if hasattr(inner, "set_requires_gradient_sync"):
        return _fsdp_no_sync(inner)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm (a plain 0-d tensor, the same on every rank: FSDP's shards'
    norms combined); with `max_norm` > 0 the gradients are scaled down to it (what
    `clip_grad_norm_` does)."""
    parameters = list(parameters)
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    norm = full(norm)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor: a DTensor gathered whole (every rank must call it), else itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module, world: World) -> dict[str, torch.Tensor]:
    """The whole model's weights as CPU tensors in OpenCLIP's shapes, on rank 0 (the others
    get {}); every rank must call it (one tensor gathered at a time)."""
    scalars = set(getattr(model, SCALARS, ()))
    out = {}
    for name, value in model.state_dict().items():
        value = full(value)
        if world.is_main:
            out[name] = (value.reshape(()) if name in scalars else value).detach().to("cpu", copy=True)
    return out


def checkpointer(directory: Path, cfg: TrainConfig, world: World, model: torch.nn.Module,
                 parts: dict[str, checkpoint.Stateful]) -> checkpoint.Checkpointer:
    """The run's checkpointer: one file per checkpoint with `ddp`; with `fsdp` a directory of
    every rank's shards, with the whole model's weights beside them (checkpoint.py)."""
    if cfg.parallel == "fsdp":
        return checkpoint.ShardedCheckpointer(directory, cfg.keep_checkpoints, world, parts,
                                              lambda: full_state_dict(model, world))
    return checkpoint.Checkpointer(directory, cfg.keep_checkpoints, world, parts)


def evaluator(inner: Evaluator | NullEvaluator, cfg: TrainConfig, world: World) -> Evaluator | NullEvaluator:
    """`inner` itself with `ddp`; with `fsdp`, `inner` run on a whole copy of the model."""
    if cfg.parallel != "fsdp" or isinstance(inner, NullEvaluator):
        return inner
    return WholeModelEvaluator(inner, lambda: models.create(cfg.model), world)


class WholeModelEvaluator:
    """Evaluates a sharded model through a whole copy of it on every rank, rebuilt for each
    evaluation and dropped after: the evaluator splits its images and texts over the ranks
    (unevenly, in batches of its own), and a sharded model would need the same forward
    calls on every rank."""

    def __init__(self, inner: Evaluator, create: Callable[[], torch.nn.Module], world: World):
        self.inner, self.create, self.world = inner, create, world

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        """The metrics of `inner` (every rank must call it)."""
        with torch.random.fork_rng(devices=[]):   # its random initialisation leaves the run's RNG as it was
            copy = self.create()
        copy.to(self.world.device)
        own = copy.state_dict()
        with torch.no_grad():
            for name, value in model.state_dict().items():
                own[name].copy_(full(value).reshape(own[name].shape))
        return self.inner.run(copy)
