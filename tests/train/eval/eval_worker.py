"""Run by the tests as one of several processes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
set): builds the evaluator of an EvalConfig, runs it on a checkpoint's model and writes
{"metrics": ..., "local": this rank's share} to OUT."""

from __future__ import annotations

import json
import sys

import torch

from train import dist
from train.config import EvalConfig
from train.eval.evaluator import build_evaluator
from train.model.clip import load


def main(checkpoint: str, config: str, out: str) -> None:
    torch.set_num_threads(1)
    world = dist.init()
    loaded = load(checkpoint)
    evaluator = build_evaluator(EvalConfig(**json.loads(config)), world, loaded.tokenizer, loaded.image_size,
                                loaded.mean, loaded.std, 10**8)
    metrics = evaluator.run(loaded.model)
    zeroshot, retrieval = evaluator.tasks
    local = {"images": len(zeroshot.pixels), "prompts": len(zeroshot.tokens), "pairs": len(retrieval.pixels)}
    with open(out, "w") as f:
        json.dump({"metrics": metrics, "local": local}, f)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
