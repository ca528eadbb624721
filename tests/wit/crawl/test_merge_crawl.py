"""`wit merge-crawl` on the parts of real `wit crawl --part I/N` runs: the merged dir equals
a crawl of the whole pool where it should (entry counts, counts, candidates, the samples
`wit shard` keeps), and parts that are missing, unfinished, doubled or crawled otherwise are
refused with one line naming them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.crawls import samples, write_pool
from tests.support.faults import kill_during_overwrite
from tests.support.witcli import assert_one_line_error, run_wit

wit_merge = partial(run_wit, "merge-crawl")


def crawl(queries: Path, pool: str | Path, out: Path, part: str | None, *extra, **popen):
    """`wit crawl` of `pool` (a glob) into `out`, as part `part` (I/N) or of the whole pool."""
    args = ["--queries", queries, "--out", out, "--candidates", pool, "--allow-private-hosts",
            "--processes", "1", "--threads", "4", "--timeout", "5", *extra]
    return run_wit("crawl", *args, *(["--part", part] if part else []), **popen)


def crawled(queries: Path, pool: str | Path, out: Path, part: str | None, *extra) -> Path:
    done = crawl(queries, pool, out, part, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def merge_error(result, *fragments) -> None:
    assert_one_line_error(result, "merge-crawl", *fragments)


def uids(directory: Path) -> list[str]:
    return sorted(pq.read_table(directory, columns=["uid"])["uid"].to_pylist())


def texts(prefix: str, n: int) -> list[str]:
    """Texts matching the test queries (dog, cat, red dog, bird) unevenly, and some nothing."""
    kinds = ["a dog", "a red dog and a cat", "a cat", "nothing here", "a bird, a dog", "dog"]
    return [f"{kinds[(i * 7 + len(prefix)) % len(kinds)]} ({prefix} {i})" for i in range(n)]


@pytest.mark.slow
def test_merged_counts_equal_a_whole_pool_crawl(queries_dir, tmp_path):
    for f in range(5):
        rows = [(f"http://127.0.0.1:9/img/p{f}-{i}.jpg", t) for i, t in enumerate(texts(f"file {f}", 6 + 3 * f))]
        rows += [(f"ftp://127.0.0.1/p{f}.jpg", "a dog")]   # refused (scheme), counted
        write_pool(tmp_path / f"pool-{f}.parquet", rows)
    pool = f"{tmp_path}/pool-*.parquet"
    whole = crawled(queries_dir, pool, tmp_path / "whole", None, "--match-only")
    out = tmp_path / "crawl"
    parts = [crawled(queries_dir, pool, out / f"part-{i}", f"{i}/3", "--match-only") for i in range(3)]

    done = wit_merge("--parts", f"{out}/part-*", "--out", out / "crawl")
    assert done.returncode == 0, done.stderr
    merged = out / "crawl"
    entry = pq.read_table(merged / "entry_counts.parquet").to_pylist()
    assert entry == pq.read_table(whole / "entry_counts.parquet").to_pylist()
    part_entries = [pq.read_table(p / "entry_counts.parquet")["matched"].to_pylist() for p in parts]
    assert [e["matched"] for e in entry] == [sum(column) for column in zip(*part_entries)]
    assert all(0 < sum(e) < sum(x["matched"] for x in entry) for e in part_entries)   # every part had a share

    summary, reference = (json.loads((d / "crawl.json").read_text()) for d in (merged, whole))
    assert summary["tool"] == "wit merge-crawl" and summary["parts"] == 3 and summary["queries"] == 4
    assert summary["counts"] == reference["counts"] and summary["counts"]["refused"]["scheme"] == 5
    assert summary["queries_matched"] == reference["queries_matched"] == 4
    assert summary["candidate_files"] == reference["candidate_files"]   # the pool in its order
    assert [p["part"] for p in summary["part_summaries"]] == ["0/3", "1/3", "2/3"]
    assert summary["part_summaries"][0]["candidate_files"] == [str(tmp_path / f"pool-{f}.parquet") for f in (0, 3)]
    # candidates/ and selected/: links to every part's files, resolving where the merge put them
    links = sorted((merged / "candidates").iterdir())
    assert [p.name.split("-")[1] for p in links] == ["0", "0", "1", "1", "2"]
    assert all(p.is_symlink() and not os.path.isabs(os.readlink(p)) and p.exists() for p in links)
    assert uids(merged / "candidates") == uids(whole / "candidates")
    assert uids(merged / "selected") == uids(whole / "selected")   # the cap keeps everything here
    assert not (merged / "download").exists() and "download" not in summary

    again = wit_merge("--parts", f"{out}/part-*", "--out", merged)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    # A part crawled again (same settings, a new output): the old merge no longer matches it.
    shutil.rmtree(parts[1])
    crawled(queries_dir, pool, parts[1], "1/3", "--match-only")
    merge_error(wit_merge("--parts", f"{out}/part-*", "--out", merged), merged, "other settings or inputs (parts)",
                "--overwrite")
    assert json.loads((merged / "crawl.json").read_text()) == summary   # kept
    done = wit_merge("--parts", f"{out}/part-*", "--out", merged, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert pq.read_table(merged / "entry_counts.parquet").to_pylist() == entry


@pytest.mark.slow
def test_refuses_missing_unfinished_and_half_downloaded_parts(web, queries_dir, tmp_path):
    for f in range(3):
        delay = "?delay=1" if f == 1 else ""   # part 1 downloads slowly: it is killed downloading
        write_pool(tmp_path / f"pool-{f}.parquet",
                   [(web.url(f"/img/u{f}-{i}.jpg{delay}"), f"a dog {i}") for i in range(4)])
    pool = f"{tmp_path}/pool-*.parquet"
    one = ("--samples-per-shard", "1")   # a setting of every part alike
    out = tmp_path / "crawl"
    merged = out / "crawl"
    for i in (0, 2):
        crawled(queries_dir, pool, out / f"part-{i}", f"{i}/3", *one, "--match-only")
    merge_error(wit_merge("--parts", f"{out}/part-*", "--out", merged),
                "3 parts declared, missing part(s) 1 (run those array tasks")
    assert not merged.exists()

    proc = crawl(queries_dir, pool, out / "part-1", "1/3", *one, start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    building = out / ".part-1.partial" / "download"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(building.glob("*_stats.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)   # the crawl and every process it started, mid-download
    proc.wait()
    assert building.is_dir() and not (out / "part-1").exists()
    merge_error(wit_merge("--parts", f"{out}/part-*", "--out", merged),
                f"{out}/part-1: not a finished crawl", "(run array task 1 again; it resumes)")
    assert not merged.exists()

    crawled(queries_dir, pool, out / "part-1", "1/3", *one)   # resumed, downloaded
    merge_error(wit_merge("--parts", f"{out}/part-*", "--out", merged),
                f"{out}/part-0: crawled with --match-only, but {out}/part-1 downloaded")
    for i in (0, 2):   # the same command without --match-only goes on to download
        crawled(queries_dir, pool, out / f"part-{i}", f"{i}/3", *one)
    done = wit_merge("--parts", f"{out}/part-*", "--out", merged)
    assert done.returncode == 0, done.stderr
    summary = json.loads((merged / "crawl.json").read_text())
    assert summary["download"]["successes"] == summary["counts"]["downloaded"] == 12
    assert sorted(p.name for p in (merged / "download").glob("*.tar")) == [f"{n:05d}.tar" for n in range(12)]


@pytest.mark.slow
def test_refuses_parts_of_other_crawls(queries_dir, tmp_path):
    for name in ("0", "a", "b", "c"):
        write_pool(tmp_path / f"{name}.parquet", [(f"http://127.0.0.1:9/{name}-{i}.jpg", "a dog") for i in range(3)])
    abc = f"{tmp_path}/[abc].parquet"
    part0 = crawled(queries_dir, abc, tmp_path / "part-0", "0/2", "--match-only")          # a, c
    part1 = crawled(queries_dir, abc, tmp_path / "part-1", "1/2", "--match-only")          # b
    out = tmp_path / "merged"
    cases = [
        (crawled(queries_dir, abc, tmp_path / "cap", "1/2", "--match-only", "--cap", "5", "--seed", "3"),
         ["cap: crawled with other settings than", "part-0 (cap, seed); crawl every part with the same options"]),
        (crawled(queries_dir, f"{tmp_path}/[0a].parquet", tmp_path / "overlap", "1/2", "--match-only"),   # a
         [f"{tmp_path}/a.parquet: crawled by both {part0} and", "overlap"]),
        (crawled(queries_dir, abc, tmp_path / "again", "0/2", "--match-only"),
         ["again: part 0/2 again (also", "give each part once"]),
        (crawled(queries_dir, abc, tmp_path / "of3", "1/3", "--match-only"),
         ["the parts disagree on the number of parts (2 in", "3 in", "of3"]),
    ]
    for other, fragments in cases:
        merge_error(wit_merge("--parts", part0, other, "--out", out), *fragments)
        assert not out.exists()
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    merge_error(wit_merge("--parts", part0, tmp_path / "stray", "--out", out), "stray: not a `wit crawl` output")
    merge_error(wit_merge("--parts", f"{tmp_path}/nothing-*", "--out", out), "nothing-*: no part dir matches")
    assert not out.exists()
    # the two parts of one crawl merge
    done = wit_merge("--parts", part0, part1, "--out", out)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "crawl.json").read_text())["counts"]["matched"] == 9


def shard_samples(shards: Path) -> list[tuple]:
    """(uid, sha256, query_ids) of every sample in a SHARDS dir."""
    return sorted((m["uid"], m["sha256"], tuple(m["query_ids"])) for m in samples(shards))


@pytest.mark.slow
def test_shard_of_merged_parts_equals_shard_of_a_whole_pool_crawl(web, queries_dir, tmp_path):
    for f in range(3):   # 3 files over 2 parts: part 0 takes files 0 and 2, part 1 file 1
        rows = [(web.url(f"/img/w{f}-{i}.jpg"), f"a dog, number {i} of file {f}") for i in range(4)]
        rows += [(web.url(f"/img/wcat{f}.png"), "a cat"), (web.url("/404"), "a lost dog"),
                 (web.url("/img/wshared.jpg"), "the same red dog in every file")]
        write_pool(tmp_path / f"pool-{f}.parquet", rows)
    pool = f"{tmp_path}/pool-*.parquet"
    options = ("--samples-per-shard", "3")
    whole = crawled(queries_dir, pool, tmp_path / "whole", None, *options)
    out = tmp_path / "crawl"
    parts = [crawled(queries_dir, pool, out / f"part-{i}", f"{i}/2", *options) for i in range(2)]
    done = wit_merge("--parts", f"{out}/part-*", "--out", out / "crawl")
    assert done.returncode == 0, done.stderr
    merged = out / "crawl"

    counts = [len(list((p / "download").glob("*.tar"))) for p in parts]
    assert counts == [6, 3]   # 3 shards (3 + 3 + 1) a file: both parts number theirs from 00000
    tars = sorted((merged / "download").glob("*.tar"))
    assert [t.name for t in tars] == [f"{n:05d}.tar" for n in range(9)]
    assert os.readlink(tars[6]) == "../../part-1/download/00000.tar"
    assert all(t.resolve().is_file() and t.with_name(t.stem + "_stats.json").exists() for t in tars)
    summary, reference = (json.loads((d / "crawl.json").read_text()) for d in (merged, whole))
    assert summary["part_summaries"][1]["shards"] == ["00006=00000", "00007=00001", "00008=00002"]
    for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
        assert summary["download"][key] == reference["download"][key], key
    assert summary["download"]["successes"] == 18 and summary["download"]["errors"] == {"HTTP Error 404: Not Found": 3}

    results = {}
    for name, crawl_dir in (("whole", whole), ("merged", merged)):
        shards = tmp_path / f"shards-{name}"
        done = run_wit("shard", "--crawl", crawl_dir, "--out", shards, "--cap", "1000", "--samples-per-shard", "4",
                       "--workers", "2")
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = shard_samples(shards)
    # 12 dogs + 3 cats + the shared red dog once (its 3 downloads are one uid)
    assert len(results["merged"]) == 16 and results["merged"] == results["whole"]


def merged_outputs(directory: Path):
    """What a merged CRAWL dir holds, without timings: its links and its entry counts."""
    if not directory.exists():
        return None
    links = sorted((p.relative_to(directory).as_posix(), os.readlink(p)) for p in directory.rglob("*") if p.is_symlink())
    return links, pq.read_table(directory / "entry_counts.parquet").to_pylist()


@pytest.mark.slow
def test_kill_9_during_overwrite_leaves_the_old_or_the_new_output(queries_dir, tmp_path):
    for f in range(4):
        write_pool(tmp_path / f"pool-{f}.parquet", [(f"http://127.0.0.1:9/{f}-{i}.jpg", t)
                                                    for i, t in enumerate(texts(f"f{f}", 5 + f))])
    for name, count in (("a", 2), ("b", 4)):   # the same pool in 2 parts, then in 4
        for i in range(count):
            crawled(queries_dir, f"{tmp_path}/pool-*.parquet", tmp_path / name / f"part-{i}", f"{i}/{count}",
                    "--match-only")
    kill_during_overwrite(["merge-crawl", "--parts", tmp_path / "a" / "part-*"],
                          ["merge-crawl", "--parts", tmp_path / "b" / "part-*"], tmp_path / "merged", merged_outputs)
