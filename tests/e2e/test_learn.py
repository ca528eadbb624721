"""End to end: the shipped tiny model, trained for a few minutes on a learnable generated
world, classifies held-out images zero-shot far above chance; `python -m train.evaluate`
on the final checkpoint agrees with the evaluation the trainer ran."""

from __future__ import annotations

import json

import pytest

from tests.cli import REPO, run_module
from wit.demo.world import write_imagefolder, write_shards


@pytest.mark.slow
def test_tiny_model_learns_the_world_and_zero_shot_is_far_above_chance(tmp_path):
    write_shards(tmp_path / "shards", samples=3000, seed=0, samples_per_shard=250)
    folder = write_imagefolder(tmp_path / "heldout", per_class=6, seed=1)
    run_dir = tmp_path / "run"
    done = run_module("train", "--config", REPO / "pipelines/configs/tiny.yaml", "--set",
                      f"shards={tmp_path / 'shards'}", f"run_dir={run_dir}", "steps=200", "warmup=20",
                      "save_every=0", "log_every=20", f"eval.imagefolder={folder}",
                      f"eval.classnames={folder / 'classnames.txt'}", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in lines if m["kind"] == "train"]
    assert losses[-1] < 0.6 * losses[0]
    final = [m for m in lines if m["kind"] == "eval"][-1]
    assert final["step"] == 200 and final["zeroshot_classes"] == 49
    assert final["zeroshot_top1"] >= 5 * final["zeroshot_chance"], final

    out = tmp_path / "eval.json"
    done = run_module("train.evaluate", "--checkpoint", run_dir / "checkpoints" / "latest.pt",
                      "--imagefolder", folder, "--classnames", folder / "classnames.txt", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["metrics"]["zeroshot_top1"] == pytest.approx(final["zeroshot_top1"])
