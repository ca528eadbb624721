"""The README's main command end to end (its fast variant): from the Wikipedia excerpt to
a trained CLIP whose zero-shot accuracy on held-out images is at least three times chance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.cli import REPO


@pytest.mark.slow
@pytest.mark.timeout(1800)   # the demo's own limit (below) governs
def test_demo_runs_every_stage_and_the_model_learns(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "demo.py"), "--out", str(out), "--fast"],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["zero_shot_top1"] >= 3 * summary["chance"], summary
    assert summary["chance"] == pytest.approx(1 / 49)
    sources = summary["queries_per_source"]
    assert all(sources[s] > 0 for s in ("unigram", "bigram", "title")), sources
    assert summary["candidates"] >= summary["matched"] >= summary["selected"] >= summary["downloaded"] > 0
    assert 0 < summary["shard_samples"] <= summary["downloaded"]
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["recall_t2i@5"] > 5 * summary["retrieval_chance@1"]
    assert "zero-shot top-1" in done.stdout and f"{summary['zero_shot_top1']:.1%}" in done.stdout
    for plot in ("loss.png", "logit_scale.png", "query_distribution.png"):
        assert (out / "run" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = [t for tar in sorted((out / "shards").glob("*.tar")) for t in _texts(tar)]
    assert len(texts) == summary["shard_samples"]
    for colour, shape in (name.split() for name in summary["unseen_classes"]):   # described only in words
        assert not any(colour in t.split() and (shape in t or shape + "s" in t) for t in texts), (colour, shape)


def _texts(path) -> list[str]:
    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
