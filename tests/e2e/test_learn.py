"""End to end, with the shipped tiny model trained for a few minutes on a learnable
generated world (`world_model`, trained once for this module):
- it classifies held-out images zero-shot far above chance, and `python -m
  train.evaluate` on the final checkpoint agrees with the evaluation the trainer ran;
- as a scorer, `wit embed` scores pairs whose texts were shuffled lower, `wit filter
  --clip-score --keep-fraction 0.5` removes mostly those, and a model trained on what it
  keeps does better on held-out images than one trained on everything."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.cli import REPO, run_module
from tests.support.crawls import Sample, write_download
from tests.support.witcli import run_wit
from wit.demo.world import jpeg, render, sample_scene, write_imagefolder, write_shards
from wit.formats.embeddings import read_embeddings
from wit.shards.build import ShardConfig, run as shard

SAMPLES = 2400   # of the noisy set
STEPS = 150      # of the models trained on the noisy and the filtered set


def train(shards: Path | None, run_dir: Path, folder: Path, steps: int = STEPS, warmup: int = 15,
          settings: tuple[str, ...] = ()) -> list[dict]:
    """Train the tiny model for `steps` on `shards` (None: `settings` name the data),
    evaluating zero-shot on `folder`, with more `key=value` settings; its metrics lines."""
    done = run_module("train", "--config", REPO / "pipelines/configs/tiny.yaml", "--set",
                      f"shards={shards or ''}",
                      f"run_dir={run_dir}", f"steps={steps}", f"warmup={warmup}", "save_every=0", "log_every=20",
                      f"eval.imagefolder={folder}", f"eval.classnames={folder / 'classnames.txt'}", *settings,
                      timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_top1(lines: list[dict]) -> float:
    return [m for m in lines if m["kind"] == "eval"][-1]["zeroshot_top1"]


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    """The tiny model trained for 200 steps on 3000 clean world samples: (its run dir, its
    metrics lines, the held-out imagefolder)."""
    root = tmp_path_factory.mktemp("world")
    write_shards(root / "shards", samples=3000, seed=0, samples_per_shard=250)
    folder = write_imagefolder(root / "heldout", per_class=6, seed=1)
    lines = train(root / "shards", root / "run", folder, steps=200, warmup=20)
    return root / "run", lines, folder


@pytest.mark.slow
def test_tiny_model_learns_the_world_and_zero_shot_is_far_above_chance(world_model, tmp_path):
    run_dir, lines, folder = world_model
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

def noisy_shards(root: Path, seed: int) -> tuple[Path, set[str]]:
    """A SHARDS dir (made by `wit shard`) of world scenes, half of them with the caption
    of another scene of that half; and the uids of the shuffled half."""
    rng = random.Random(f"clip-score:{seed}")
    scenes = [sample_scene(rng) for _ in range(SAMPLES)]
    captions = [s.caption for s in scenes]
    shuffled = list(range(0, SAMPLES, 2))
    moved = shuffled[1:] + shuffled[:1]             # a cyclic shift: no caption stays with its image
    for i, j in zip(shuffled, moved):
        captions[i] = scenes[j].caption
    samples = [Sample(f"http://world.example/{seed}/{i}.jpg", captions[i], [0], jpeg(render(s)))
               for i, s in enumerate(scenes)]
    crawl = write_download(root / "crawl", [samples[i:i + 400] for i in range(0, SAMPLES, 400)], queries=1)
    out = root / "shards"
    shard(ShardConfig(crawl=str(crawl), out=str(out), samples_per_shard=400, workers=2, cap=10 * SAMPLES))
    return out, {samples[i].uid for i in shuffled}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a clean pair scores above a shuffled one)."""
    return float((positive[:, None] > negative[None, :]).mean())



@pytest.mark.slow
def test_clip_score_removes_shuffled_pairs_and_the_filtered_set_trains_better(world_model, tmp_path):
    run_dir, _, folder = world_model
    scorer = run_dir / "checkpoints" / "latest.pt"

    noisy, shuffled = noisy_shards(tmp_path / "noisy", seed=3)
    embedded = run_wit("embed", "--checkpoint", scorer, "--shards", noisy, "--out", tmp_path / "embed",
                       timeout=900)
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    table = read_embeddings(str(tmp_path / "embed"), str(noisy))
    score = {uid: float(np.dot(i, t)) for uid, i, t in zip(table["uid"].to_pylist(), table["image"].to_pylist(),
                                                               table["text"].to_pylist())}
    clean_scores = np.array([s for uid, s in score.items() if uid not in shuffled])
    shuffled_scores = np.array([s for uid, s in score.items() if uid in shuffled])
    assert len(clean_scores) == len(shuffled_scores) == SAMPLES // 2
    assert auc(clean_scores, shuffled_scores) >= 0.9

    filtered = tmp_path / "filtered"
    done = run_wit("filter", "--shards", noisy, "--out", filtered, "--clip-score", "--embeddings",
                   tmp_path / "embed", "--keep-fraction", "0.5", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    removed = pq.read_table(filtered / "removed.parquet")["uid"].to_pylist()
    assert len(removed) == SAMPLES // 2
    assert len(set(removed) & shuffled) >= 0.85 * len(removed)

    on_filtered = final_top1(train(filtered, tmp_path / "on-filtered", folder))
    on_all = final_top1(train(noisy, tmp_path / "on-all", folder))
    assert on_filtered >= on_all + 0.05, (on_filtered, on_all)


@pytest.mark.slow
def test_lit_a_locked_trained_image_tower_with_a_new_text_tower_learns_fast(world_model, tmp_path):
    """LiT: the world model's image tower, locked, with a text tower from scratch, reaches
    zero-shot far above chance in a third of the steps the whole model needed; the image
    tower is bit-identical afterwards."""
    import torch

    from train.model import clip as models
    from train.model import tune

    run_dir, _, folder = world_model
    trained = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["state_dict"]
    cfg = models.ModelConfig(**{k: v for k, v in __import__("yaml").safe_load(
        (REPO / "pipelines/configs/tiny.yaml").read_text())["model"].items()})
    torch.manual_seed(5)
    fresh = models.create(cfg).state_dict()
    text = set(tune.tower_parameters(models.create(cfg), "text"))
    start = {k: (fresh[k] if k in text else v) for k, v in trained.items()}
    init = tmp_path / "lit-init.pt"
    torch.save(start, init)
    lines = train(world_model[0].parent / "shards", tmp_path / "lit", folder, steps=70, warmup=7,
                  settings=(f"init={init}", "lock=image"))
    final = [m for m in lines if m["kind"] == "eval"][-1]
    assert final["zeroshot_top1"] >= 5 * final["zeroshot_chance"], final
    after = torch.load(tmp_path / "lit" / "checkpoints" / "latest.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith("visual."))
    assert not all(torch.equal(after[k], start[k]) for k in text)
