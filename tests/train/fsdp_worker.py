"""Run by tests/train/test_fsdp.py under torchrun (or alone), on the tiny model and fixed
global batches, each rank taking its rows.

    steps OUT            three steps (gradient clipping on) with ddp, with fsdp, with fsdp
                         and 2 micro-batches, and ddp / fsdp in bf16: OUT/steps.pt holds
                         each one's losses, norms, first gradients and final weights
    load STEP_DIR OUT    restore the sharded checkpoint STEP_DIR on this many ranks: OUT/held.pt
                         holds the whole weights, optimizer state and schedule then
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tests.support.checkpoints import TINY_MODEL
from train import dist, optim, parallel
from train.config import ModelConfig, TrainConfig
from train.dist import World
from train.model import clip as models
from train.step import Stepper

BATCH = 8


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of `step`: uint8 images and token ids."""
    generator = torch.Generator().manual_seed(100 + step)
    pixels = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return pixels, torch.randint(1, 49000, (BATCH, 16), generator=generator)


class Run:
    """The tiny model, sharded or wrapped as `cfg` says, with its optimizer and stepper."""

    def __init__(self, cfg: TrainConfig, world: World):
        self.cfg, self.world = cfg, world
        torch.manual_seed(0)
        self.model = parallel.shard(models.create(cfg.model), cfg, world)
        self.optimization = optim.build(self.model, cfg)
        self.stepper = Stepper(self.model, parallel.wrap(self.model, cfg, world), self.optimization, cfg, world,
                               *models.mean_std(self.model))

    def step(self, number: int) -> tuple[float, float]:
        """One optimisation step on `batch(number)`; the loss (mean over ranks) and the gradient norm."""
        pixels, tokens = batch(number)
        rows = slice(self.world.rank * BATCH // self.world.size, (self.world.rank + 1) * BATCH // self.world.size)
        loss, norm = self.stepper(*self.stepper.inputs({"images": pixels[rows], "tokens": tokens[rows]}))
        self.grads = {n: parallel.full(p.grad).clone() for n, p in self.model.named_parameters()}
        self.stepper.finish()
        if self.world.size > 1:
            torch.distributed.all_reduce(loss)
            loss /= self.world.size
        return loss.item(), norm.item()

    def held(self) -> dict:
        """The whole weights, optimizer state and schedule (rank 0's; every rank must call it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer = self.optimization.optimizer
        if self.optimization.sharded is not None:
            optimizer = get_optimizer_state_dict(self.model, optimizer,
                                                 options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            optimizer = optimizer.state_dict()
        return _cloned({"weights": parallel.full_state_dict(self.model, self.world), "optimizer": optimizer,
                        "scheduler": self.optimization.schedule.state_dict()})


def config(**kw) -> TrainConfig:
    kw = {"batch_size": BATCH, "lr": 1e-3, "warmup": 1, "steps": 10, "grad_clip": 0.5, "precision": "fp32", **kw}
    return TrainConfig(shards="-", run_dir="-", model=ModelConfig("wit-test-tiny", TINY_MODEL), **kw)


def steps(out: Path, world: World) -> None:
    results = {}
    configs = {"ddp": config(), "fsdp": config(parallel="fsdp"), "fsdp_accum": config(parallel="fsdp", accum_steps=2),
               "ddp_bf16": config(precision="bf16"), "fsdp_bf16": config(parallel="fsdp", precision="bf16")}
    for name, cfg in configs.items():
        run = Run(cfg, world)
        losses, norms, grads = [], [], None
        for number in range(3):
            loss, norm = run.step(number)
            losses.append(loss)
            norms.append(norm)
            grads = grads or run.grads
        results[name] = {"losses": losses, "norms": norms, "grads": grads, "weights": run.held()["weights"]}
    if world.is_main:
        torch.save(results, out / "steps.pt")


def load(step_dir: Path, out: Path, world: World) -> None:
    """Restore a sharded checkpoint of the tiny model (a `python -m train` run's) on this many ranks."""
    run = Run(config(parallel="fsdp"), world)
    checkpointer = parallel.checkpointer(step_dir.parent, run.cfg, world, run.model,
                                         {"state_dict": run.model, "optimizer": run.optimization})
    checkpointer.restore_state(checkpointer.newest_valid([step_dir])[1])
    held = run.held()
    if world.is_main:
        torch.save(held, out / "held.pt")


def _cloned(tree):
    """`tree` with every tensor copied (a state dict may hold the live ones)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _cloned(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cloned(v) for v in tree)
    return tree


if __name__ == "__main__":
    world = dist.init()
    mode, *paths = sys.argv[1:]
    if mode == "steps":
        steps(Path(paths[0]), world)
    else:
        load(Path(paths[0]), Path(paths[1]), world)
    dist.shutdown()
