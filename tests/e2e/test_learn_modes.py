"""The training modes learn: the shipped tiny model, trained for a short run on the
generated world with SigLIP's loss on two mixed sources, or with FLIP patch dropout and its
unmasked phase, classifies held-out images zero-shot far above chance, as the CLIP loss
does (tests/e2e/test_learn.py, which also has LiT's run). `parallel: fsdp` takes the same
steps as ddp (tests/train/test_fsdp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_learn import train
from wit.demo.world import write_imagefolder, write_shards


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(the world's shards, in two SHARDS dirs a/ and b/; the held-out imagefolder)."""
    root = tmp_path_factory.mktemp("world")
    write_shards(root / "a", samples=2000, seed=0, samples_per_shard=250)
    write_shards(root / "b", samples=1000, seed=7, samples_per_shard=250)
    return root, write_imagefolder(root / "heldout", per_class=6, seed=1)


def final_eval(lines: list[dict]) -> dict:
    return [m for m in lines if m["kind"] == "eval"][-1]


@pytest.mark.slow
def test_siglip_on_two_mixed_sources_learns(world, tmp_path):
    """SigLIP from the paper's start (bias -10, made for batches of thousands) sits on a
    plateau for about 200 steps at batch 64 before it learns: 400 steps."""
    root, folder = world
    data = f"data=[{{shards: {root / 'a'}, weight: 2}}, {{shards: {root / 'b'}, weight: 1}}]"
    steps = 400
    lines = train(None, tmp_path / "siglip", folder, steps=steps, warmup=20, settings=("loss=siglip", data))
    final = final_eval(lines)
    assert final["zeroshot_top1"] >= 5 * final["zeroshot_chance"], final
    logged = [m for m in lines if m["kind"] == "train"]
    assert logged[-1]["logit_bias"] != -10.0
    assert logged[-1]["sources"] == {"a": pytest.approx(steps * 64 * 2 / 3, abs=64),
                                     "b": pytest.approx(steps * 64 / 3, abs=64)}


@pytest.mark.slow
def test_patch_dropout_learns_and_ends_unmasked(world, tmp_path):
    root, folder = world
    lines = train(root / "a", tmp_path / "flip", folder, steps=200, warmup=20,
                  settings=("patch_dropout=0.5", "unmasked_steps=20"))
    final = final_eval(lines)
    assert final["zeroshot_top1"] >= 5 * final["zeroshot_chance"], final
    ratios = {m["step"]: m["patch_dropout"] for m in lines if m["kind"] == "train"}
    assert ratios[180] == 0.5 and ratios[200] == 0.0
