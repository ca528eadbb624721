"""Run by the suite tests as one of several processes (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT set): builds the evaluator of a suite, runs it on a checkpoint's model and
writes {"metrics": ..., "local": images this rank holds per set} to OUT. `run_ranks`
starts two and returns their reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def run_ranks(checkpoint: Path, suite: str, out: Path, ranks: int = 2) -> list[dict]:
    """This worker as `ranks` processes (gloo on 127.0.0.1); each rank's report."""
    from tests.cli import REPO, free_port

    env = {**os.environ, "PYTHONPATH": str(REPO), "WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.train.eval.suite_worker", str(checkpoint), suite,
                                 str(out / f"rank{rank}.json")], cwd=REPO,
                                env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                stderr=subprocess.PIPE, text=True) for rank in range(ranks)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=180)
        assert worker.returncode == 0, stderr
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(ranks)]


if __name__ == "__main__":
    main(*sys.argv[1:4])
