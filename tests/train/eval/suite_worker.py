"""Run by the suite tests as one of several processes (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT set): builds the evaluator of a suite, runs it on a checkpoint's model and
writes {"metrics": ..., "local": images this rank holds per set} to OUT."""

from __future__ import annotations

import json
import sys

import torch

from train import dist
from train.config import EvalConfig
from train.eval.evaluator import build_evaluator
from train.model.clip import load


def main(checkpoint: str, suite: str, out: str) -> None:
    torch.set_num_threads(1)
    world = dist.init()
    loaded = load(checkpoint)
    evaluator = build_evaluator(EvalConfig(suite=suite, batch_size=4), world, loaded.tokenizer, loaded.image_size,
                                loaded.mean, loaded.std, 10**8)
    metrics = evaluator.run(loaded.model)
    [task] = evaluator.tasks
    local = {d.entry.name: len(d.task.pixels) for d in task.datasets}
    with open(out, "w") as f:
        json.dump({"metrics": metrics, "local": local}, f)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
