"""Run by the tests under torchrun (or alone): one training step's loss and gradients on a
fixed global batch, each rank taking its rows; writes them to OUT/rank<R>.pt.

    python -m tests.train.grad_worker OUT ACCUM BATCH [LOSS] [no-gather]

`no-gather`: every all-gather of torch.distributed raises (the SigLIP ring must do without)."""

from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from tests.support.checkpoints import TINY_MODEL
from train import dist, optim
from train.model import clip as models
from train.config import ModelConfig, TrainConfig
from train.step import Stepper


def main(out: str, accum: int, batch: int, loss: str = "clip", gather: bool = True) -> None:
    world = dist.init()
    if not gather:
        forbid_all_gather()
    cfg = TrainConfig(shards="-", run_dir="-", model=ModelConfig("wit-test-tiny", TINY_MODEL),
                      batch_size=batch, accum_steps=accum, lr=1e-3, warmup=0, steps=10, loss=loss)
    torch.manual_seed(0)
    model = models.create(cfg.model, cfg.loss)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=generator)
    tokens = torch.randint(1, 49000, (batch, 16), generator=generator)
    rows = slice(world.rank * batch // world.size, (world.rank + 1) * batch // world.size)
    wrapped = DistributedDataParallel(model) if world.size > 1 else model
    stepper = Stepper(model, wrapped, optim.build(model, cfg), cfg, world, *models.mean_std(model))
    loss, _ = stepper(*stepper.inputs({"images": pixels[rows], "tokens": tokens[rows]}))
    if world.size > 1:
        torch.distributed.all_reduce(loss)
        loss /= world.size
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.save({"loss": loss, "grads": grads}, f"{out}/rank{world.rank}.pt")
    dist.shutdown()


def forbid_all_gather() -> None:
    """Make every all-gather entry point of torch.distributed raise."""
    def refuse(*args, **kwargs):
        raise RuntimeError("all_gather called")

    for module in (torch.distributed, torch.distributed.nn, torch.distributed.nn.functional):
        for name in ("all_gather", "all_gather_into_tensor", "_all_gather_base", "all_gather_object"):
            if hasattr(module, name):
                setattr(module, name, refuse)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5], gather="no-gather" not in sys.argv[5:])
