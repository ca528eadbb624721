"""Search: text and image queries over shards with a tiny model that knows its colours, the
EMBED dir it searches (a cache beside the checkpoint, reused, rebuilt when the shards or
the checkpoint change; or built where --embeddings says), and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_one_line_error, run_module
from tests.support.checkpoints import write_checkpoint
from tests.support.images import COLOURS, drawing
from tests.support.shards import write_shards
from train.model import clip as models
from train.search import main
from wit.formats.embeddings import read_summary

PROG = "python -m train.search"
RED = ["000000000", "000000004", "000000008"]   # write_shards colours sample n with COLOURS[n % 4]


@pytest.fixture
def checkpoint(trained_checkpoint, tmp_path):
    """A copy of the trained checkpoint (tests/train/conftest.py) of this test's own (its
    cache goes beside it)."""
    return shutil.copy(trained_checkpoint, tmp_path / "latest.pt")


def caches_of(checkpoint) -> list:
    """The EMBED dirs search keeps beside a checkpoint."""
    return sorted(p for p in Path(f"{checkpoint}.search").iterdir() if p.is_dir() and not p.name.startswith("."))


def search(capsys, *args) -> list[list[str]]:
    """The command in this process (decoding in it too): its result lines split into fields."""
    assert main([str(a) for a in args] + ["--workers", "0"]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    code = main([str(a) for a in args] + ["--workers", "0"])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_text_search_finds_the_colour_and_reuses_the_cached_features(checkpoint, tmp_path, capsys):
    write_shards(tmp_path / "shards", [5, 4], broken={"000000003"}, image=drawing)
    query = ("--checkpoint", checkpoint, "--shards", tmp_path / "shards", "--text", "a photo of a red colour.",
             "--top", 3)
    results = search(capsys, *query)
    assert [r[0] for r in results] == ["1", "2", "3"]
    assert sorted(r[2] for r in results) == RED
    scores = [float(r[1]) for r in results]
    assert scores == sorted(scores, reverse=True)
    for _, _, key, text, url in results:
        assert text == f"a red picture number {int(key)}" and url == f"http://demo.invalid/{key}.jpg"
    caches = caches_of(tmp_path / "latest.pt")
    assert len(caches) == 1
    summary = read_summary(str(caches[0]))                        # an EMBED dir, as `wit embed` writes
    assert (summary["samples"], summary["images"], summary["undecodable_images"]) == (9, 8, 1)
    written = (caches[0] / "embed.json").stat().st_mtime_ns

    assert search(capsys, *query) == results
    assert (caches[0] / "embed.json").stat().st_mtime_ns == written   # read, not rebuilt
    everything = search(capsys, *query[:-1], 100)
    assert len(everything) == 8                                   # 9 samples, one undecodable


def test_cache_is_rebuilt_when_the_shards_or_the_checkpoint_change(checkpoint, tmp_path, capsys):
    write_shards(tmp_path / "shards", [5, 4], image=drawing)
    query = ("--checkpoint", checkpoint, "--shards", tmp_path / "shards", "--text", "a photo of a red colour.",
             "--top", 20)
    assert len(search(capsys, *query)) == 9
    write_shards(tmp_path / "shards", [5, 6], image=drawing)               # a shard grows: sizes.json changes
    grown = search(capsys, *query)
    assert len(grown) == 11 and {"000000009", "000000010"} <= {r[2] for r in grown}
    caches = sorted(caches_of(tmp_path / "latest.pt"), key=lambda p: (p / "embed.json").stat().st_mtime_ns)
    assert len(caches) == 2
    before = read_summary(str(caches[-1]))

    write_checkpoint(checkpoint, seed=1)                          # the checkpoint is replaced by another model
    other = search(capsys, *query)
    after = read_summary(str(caches[-1]))
    assert after["checkpoint_sha256"] != before["checkpoint_sha256"] and caches_of(tmp_path / "latest.pt") == sorted(caches)
    assert [r[1] for r in other] != [r[1] for r in grown]


def test_embeddings_are_built_where_given_then_searched_there(checkpoint, tmp_path, capsys):
    write_shards(tmp_path / "shards", [4, 4], image=drawing)
    pattern = f"{tmp_path}/shards/{{000000..000001}}.tar"            # a pattern: no manifest to record
    query = ("--checkpoint", checkpoint, "--shards", pattern, "--text", "a photo of a red colour.", "--top", 2)
    results = search(capsys, *query, "--embeddings", tmp_path / "E")
    assert sorted(r[2] for r in results) == RED[:2]
    summary = read_summary(str(tmp_path / "E"))
    assert summary["shards_dir"] == pattern and [s["name"] for s in summary["shards"]] == ["000000.tar", "000001.tar"]
    assert not (tmp_path / "latest.pt.search").exists()            # no second copy beside the checkpoint
    written = (tmp_path / "E" / "embed.json").stat().st_mtime_ns
    assert search(capsys, *query, "--embeddings", tmp_path / "E") == results
    assert (tmp_path / "E" / "embed.json").stat().st_mtime_ns == written
    assert search(capsys, *query) == results                       # the cache beside the checkpoint agrees


def test_two_shards_of_one_name_are_refused(checkpoint, tmp_path, capsys):
    for name in ("a", "b"):
        write_shards(tmp_path / name, [2], image=drawing)
    refused = in_process(capsys, "--checkpoint", checkpoint, "--shards", f"{tmp_path}/{{a,b}}/000000.tar",
                         "--sizes", tmp_path / "a" / "sizes.json", "--text", "x")
    assert_one_line_error(refused, PROG, "two shards are named 000000.tar")


def test_image_search_finds_the_same_image_first(checkpoint, tmp_path, capsys):
    write_shards(tmp_path / "shards", [4, 4], image=drawing)
    names = list(COLOURS)
    for n in (6, 1):
        (tmp_path / "query.jpg").write_bytes(drawing(n, COLOURS[names[n % 4]]))    # sample n's own image
        results = search(capsys, "--checkpoint", checkpoint, "--shards", f"{tmp_path}/shards/{{000000..000001}}.tar",
                         "--image", tmp_path / "query.jpg", "--top", 2)
        assert results[0][:3] == ["1", "1.0000", f"{n:09d}"] and len(results) == 2


@pytest.mark.slow
def test_missing_image_is_one_line_error(checkpoint, tmp_path):
    write_shards(tmp_path / "shards", [2], image=drawing)
    result = run_module("train.search", "--checkpoint", checkpoint, "--shards", tmp_path / "shards",
                        "--image", tmp_path / "nope.jpg")
    assert_one_line_error(result, PROG, tmp_path / "nope.jpg", "no such image")


def test_missing_checkpoint_and_missing_shards_are_one_line_errors(checkpoint, tmp_path, capsys):
    write_shards(tmp_path / "shards", [2], image=drawing)
    missing = in_process(capsys, "--checkpoint", tmp_path / "nope.pt", "--shards", tmp_path / "shards", "--text", "x")
    assert_one_line_error(missing, PROG, tmp_path / "nope.pt", "no such checkpoint")
    (tmp_path / "empty").mkdir()
    no_shards = in_process(capsys, "--checkpoint", checkpoint, "--shards", tmp_path / "empty", "--text", "x")
    assert_one_line_error(no_shards, PROG, tmp_path / "empty", "sizes.json")
    (tmp_path / "shards" / "000000.tar").unlink()
    gone = in_process(capsys, "--checkpoint", checkpoint, "--shards", tmp_path / "shards", "--text", "x")
    assert_one_line_error(gone, PROG, "000000.tar", "missing")
    assert not (tmp_path / "latest.pt.search").exists() or not list((tmp_path / "latest.pt.search").iterdir())


def test_a_million_letter_query_answers_as_fast_as_a_short_one(checkpoint, tmp_path, capsys):
    import random
    import time

    write_shards(tmp_path / "shards", [5, 4], image=drawing)
    query = ("--checkpoint", checkpoint, "--shards", tmp_path / "shards", "--top", 3)
    search(capsys, *query, "--text", "a red picture")   # the feature cache, built once
    rng = random.Random(0)
    huge = "red" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    started = time.perf_counter()
    short = search(capsys, *query, "--text", "a red picture")
    short_seconds = time.perf_counter() - started
    started = time.perf_counter()
    results = search(capsys, *query, "--text", huge)
    huge_seconds = time.perf_counter() - started
    assert len(results) == 3 and len(short) == 3
    assert huge_seconds < 2 * short_seconds + 1, (huge_seconds, short_seconds)   # uncapped: no answer in minutes
    # the answer is the one for the query cut at the tokenizer's cap (CHARS_PER_TOKEN x context)
    assert results == search(capsys, *query, "--text", huge[: models.CHARS_PER_TOKEN * 16])
