"""The training modes learn: the shipped tiny model, trained for a short run on the
generated world with SigLIP's loss, two mixed sources and FLIP patch dropout with its
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


STEPS, UNMASKED = 320, 40   # SigLIP's init (bias -10) sits on a plateau for ~200 steps at batch 64


def final_eval(lines: list[dict]) -> dict:
    return [m for m in lines if m["kind"] == "eval"][-1]


@pytest.mark.slow
def test_siglip_on_two_mixed_sources_with_patch_dropout_learns(world, tmp_path):
    """One run with every new mode at once (a run each would double this file's minutes):
    SigLIP's loss, two sources mixed 2:1, patch dropout 0.5 with an unmasked end."""
    root, folder = world
    data = f"data=[{{shards: {root / 'a'}, weight: 2}}, {{shards: {root / 'b'}, weight: 1}}]"
    lines = train(None, tmp_path / "modes", folder, steps=STEPS, warmup=20,
                  settings=("loss=siglip", data, "patch_dropout=0.5", f"unmasked_steps={UNMASKED}"))
    final = final_eval(lines)
    assert final["zeroshot_top1"] >= 5 * final["zeroshot_chance"], final
    logged = [m for m in lines if m["kind"] == "train"]
    assert logged[-1]["logit_bias"] != -10.0
    assert logged[-1]["sources"] == {"a": pytest.approx(STEPS * 64 * 2 / 3, abs=64),
                                     "b": pytest.approx(STEPS * 64 / 3, abs=64)}
    ratios = {m["step"]: m["patch_dropout"] for m in logged}
    assert ratios[STEPS - UNMASKED] == 0.5 and ratios[STEPS] == 0.0
