"""The README's main command end to end (its fast variant): from Wikipedia text in English,
Japanese and Chinese to a trained multilingual CLIP whose zero-shot accuracy and retrieval
on held-out images are at least three times chance in every language."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from tests.cli import REPO
from train.model.text_tokens import FileTokenizer
from wit.demo.phrases import JA_COLOURS, JA_SHAPES, ZH_COLOURS, ZH_SHAPES
from wit.formats.embeddings import read_embeddings

LANGUAGES = ("en", "ja", "zh")


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
    # every language is crawled (its language identified offline), matched, balanced, kept and learnt
    languages = summary["languages"]
    assert sorted(languages) == sorted(LANGUAGES)
    for lang, counts in languages.items():
        assert counts["texts"] >= counts["matched"] >= counts["selected"] >= counts["downloaded"] > 0, (lang, counts)
        assert 0 < counts["shard_samples"] <= counts["downloaded"], (lang, counts)
        for name in ("shapes", "captions"):
            assert counts[name]["value"] >= 3 * counts[name]["chance"], (lang, name, counts[name])
    assert languages["en"]["t"] == pytest.approx(summary["settings"]["cap"] * 1.3)   # t_en: cap x oversample
    assert summary["suite"]["shapes"]["value"] == pytest.approx(
        sum(languages[lang]["shapes"]["value"] for lang in LANGUAGES) / 3)
    # the tokenizer trained on the shards' texts is the checkpoint's: recorded, copied, sized into the text tower
    tokenizer = out / "tokenizer.json"
    checkpoint = torch.load(out / "run" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert checkpoint["config"]["model"]["tokenizer_sha256"] == hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    assert (out / "run" / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    vocab = FileTokenizer(str(tokenizer), 1).vocab_size
    assert checkpoint["state_dict"]["token_embedding.weight"].shape[0] == vocab == summary["tokenizer"]["vocab_size"]
    # search loads it too: Japanese and Chinese queries find red shapes among held-out images captioned in English
    red = 0
    for query in (JA_COLOURS["red"] + JA_SHAPES["circle"], ZH_COLOURS["red"] + "的" + ZH_SHAPES["circle"]):
        found = subprocess.run([sys.executable, "-m", "train.search", "--checkpoint", str(out / "run" / "checkpoints"
                                / "latest.pt"), "--shards", str(out / "eval" / "shards"), "--text", query, "--top",
                                "10", "--workers", "0"], capture_output=True, text=True, env=env, timeout=300)
        assert found.returncode == 0, found.stderr[-2000:]
        red += sum("red" in line.split("\t")[3].split() for line in found.stdout.splitlines())
    assert red >= 8, red   # of 20; about 3 by chance (1 colour in 7)
    # and wit embed: each language's texts find their own images among that language's samples
    embedded = subprocess.run([sys.executable, "-m", "wit", "embed", "--checkpoint", str(out / "run" / "checkpoints"
                               / "latest.pt"), "--shards", str(out / "shards"), "--out", str(tmp_path / "embed")],
                              capture_output=True, text=True, env=env, timeout=600)
    assert embedded.returncode == 0, embedded.stderr[-2000:]
    table = read_embeddings(str(tmp_path / "embed")).to_pydict()
    lang_of = {uid: lang for uid, lang in _uids_and_languages(out / "shards")}
    for lang in LANGUAGES:
        rows = [i for i, uid in enumerate(table["uid"]) if lang_of[uid] == lang and table["image"][i] is not None]
        images = np.array([table["image"][i] for i in rows])
        texts = np.array([table["text"][i] for i in rows])
        rank = ((texts @ images.T) > np.diag(texts @ images.T)[:, None]).sum(1)   # images closer than its own
        assert (rank < 5).mean() >= 5 * 5 / len(rows), (lang, (rank < 5).mean(), len(rows))
    sources = summary["queries_per_source"]
    assert all(sources[s] > 0 for s in ("unigram", "bigram", "title")), sources
    assert summary["candidates"] >= summary["matched"] >= summary["selected"] >= summary["downloaded"] > 0
    assert 0 < summary["shard_samples"] <= summary["downloaded"]
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["recall_t2i@5"] > 5 * summary["retrieval_chance@1"]
    assert "zero-shot top-1" in done.stdout and f"{summary['zero_shot_top1']:.1%}" in done.stdout
    for plot in ("loss.png", "logit_scale.png", "query_distribution.png"):
        assert (out / "run" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = [s for tar in sorted((out / "shards").glob("*.tar")) for s in _samples(tar)]
    texts = [text for text, _ in samples]
    assert len(texts) == summary["shard_samples"]
    assert Counter(lang for _, lang in samples) == {lang: languages[lang]["shard_samples"] for lang in LANGUAGES}
    for colour, shape in (name.split() for name in summary["unseen_classes"]):   # described only in words
        assert not any(colour in t.split() and (shape in t or shape + "s" in t) for t in texts), (colour, shape)
        for phrase in (JA_COLOURS[colour] + JA_SHAPES[shape], ZH_COLOURS[colour] + ZH_SHAPES[shape],
                       ZH_COLOURS[colour] + "的" + ZH_SHAPES[shape]):
            assert not any(phrase in t for t in texts), phrase


def _uids_and_languages(shards) -> list[tuple[str, str]]:
    found = []
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            found += [(meta["uid"], meta["lang"]) for m in tar.getmembers() if m.name.endswith(".json")
                      for meta in [json.loads(tar.extractfile(m).read())]]
    return found


def _samples(path) -> list[tuple[str, str]]:
    """(caption, the lang of its json) of each sample of a shard."""
    with tarfile.open(path) as tar:
        parts = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return [(parts[name].decode(), json.loads(parts[name[:-4] + ".json"])["lang"])
            for name in sorted(parts) if name.endswith(".txt")]
