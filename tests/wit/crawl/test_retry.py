"""`wit crawl --retry-failed` against a test web whose /flaky/ urls fail a set number of times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.crawls import write_pool
from tests.support.testweb import TestWeb
from tests.support.witcli import assert_one_line_error, run_wit

wit_crawl = lambda *args, **popen: run_wit("crawl", *args, **popen)  # noqa: E731


def crawl_args(queries: Path, pool: Path, *extra) -> list:
    return ["--queries", queries, "--candidates", pool, "--allow-network", "127.0.0.0/8", "--processes", "1",
            "--threads", "4", "--retries", "1", "--samples-per-shard", "5", "--timeout", "5", *extra]


def summary_of(crawl: Path) -> dict:
    return json.loads((crawl / "crawl.json").read_text())


def failures(summary: dict) -> dict[str, int]:
    return {reason: entry["count"] for reason, entry in summary["download"]["failures"].items()}


def requested(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.mark.slow
def test_only_transient_failures_are_downloaded_again_into_new_shards(queries_dir, tmp_path):
    """503, 429, 500 and a dropped connection are retried, once each; a 404 and an HTML
    page are not; the shards there before are not touched; the result equals a crawl in
    which nothing failed, down to the bytes of `wit shard`'s shards."""
    with TestWeb() as server:
        good = [(server.url(f"/img/r{i}.jpg"), f"dog {i}") for i in range(6)]
        flaky = [(server.url(f"/flaky/f{i}.jpg?fails=2&how={how}"), f"cat {i}")   # 2 = both attempts fail
                 for i, how in enumerate(("503", "429", "reset", "503", "500"))]
        permanent = [(server.url("/404"), "dog at 404"), (server.url("/html.jpg"), "dog at html")]
        pool = write_pool(tmp_path / "pool.parquet", good + flaky + permanent)
        out = tmp_path / "crawl"
        assert wit_crawl(*crawl_args(queries_dir, pool), "--out", out).returncode == 0
        first = summary_of(out)
        assert first["counts"]["downloaded"] == 6
        before = {"http_5xx": 3, "http_429": 1, "connection": 1, "http_4xx": 1, "unsupported_format": 1}
        assert failures(first) == before
        shards_before = {p.name: p.read_bytes() for p in (out / "download").iterdir()}
        seen = len(server.requests())

        done = wit_crawl(*crawl_args(queries_dir, pool), "--out", out, "--retry-failed")
        assert done.returncode == 0, done.stderr
        assert sorted(server.requests()[seen:]) == sorted(["/robots.txt"] + [requested(u) for u, _ in flaky])
        summary = summary_of(out)
        assert summary["counts"]["downloaded"] == 11
        assert failures(summary) == {"http_4xx": 1, "unsupported_format": 1}
        assert summary["download"]["count"] == len(good + flaky + permanent)
        [retry] = summary["retries"]
        assert (retry["round"], retry["retried"], retry["recovered"], retry["first_shard"]) == (1, 5, 5, 3)
        assert retry["before"] == {"successes": 6, "failures": before}
        assert retry["after"] == {"successes": 11, "failures": {"http_4xx": 1, "unsupported_format": 1}}
        for name, data in shards_before.items():
            assert (out / "download" / name).read_bytes() == data, name
        assert sorted(p.name for p in (out / "download").glob("*.tar")) == [f"0000{i}.tar" for i in range(4)]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crawl.")]

        seen = len(server.requests())   # nothing transient left: nothing fetched, nothing changed
        again = wit_crawl(*crawl_args(queries_dir, pool), "--out", out, "--retry-failed")
        assert again.returncode == 0 and "nothing to retry" in again.stderr
        assert len(server.requests()) == seen and summary_of(out) == summary

        reference = tmp_path / "reference"   # the same pool now that nothing fails
        assert wit_crawl(*crawl_args(queries_dir, pool), "--out", reference).returncode == 0
        assert summary_of(reference)["counts"]["downloaded"] == 11
    for crawl in (out, reference):
        made = run_wit("shard", "--crawl", crawl, "--out", tmp_path / f"shards-{crawl.name}", "--workers", "1")
        assert made.returncode == 0, made.stderr
    tars = {c: {p.name: p.read_bytes() for p in (tmp_path / f"shards-{c}").glob("*.tar")}
            for c in ("crawl", "reference")}
    assert tars["crawl"] == tars["reference"] and tars["crawl"]


def test_retry_needs_a_finished_crawl_with_the_same_settings(queries_dir, tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", [("http://127.0.0.1:9/img/a.jpg", "dog")])
    out = tmp_path / "crawl"
    assert_one_line_error(wit_crawl(*crawl_args(queries_dir, pool), "--out", out, "--retry-failed"), "crawl",
                          str(out), "no complete `wit crawl` output made with these settings")
    assert not out.exists() and not (tmp_path / ".crawl.partial").exists()
    assert_one_line_error(wit_crawl(*crawl_args(queries_dir, pool), "--out", out, "--retry-failed",
                                    "--match-only"), "crawl", "--retry-failed")


@pytest.mark.slow
def test_kill_9_during_a_retry_leaves_the_crawl_before_or_after_it(queries_dir, tmp_path):
    """Killed at any moment, the CRAWL dir is the one before the retry or the one after it
    (never a part of the new shards); a rerun finishes the retry."""
    with TestWeb() as server:
        rows = [(server.url(f"/img/g{i}.jpg"), f"dog {i}") for i in range(4)]
        rows += [(server.url(f"/flaky/k{i}.jpg?fails=1&delay=0.3"), f"cat {i}") for i in range(12)]
        pool = write_pool(tmp_path / "pool.parquet", rows)
        args = [*crawl_args(queries_dir, pool, "--retries", "0"), "--out", tmp_path / "crawl"]
        assert wit_crawl(*args).returncode == 0

        def state() -> tuple:
            names = sorted(p.name for p in (tmp_path / "crawl" / "download").iterdir())
            return names, summary_of(tmp_path / "crawl")["counts"]["downloaded"]

        old = state()
        assert old[1] == 4
        states = set()
        for seconds in (1.0, 3.0, 5.0, 7.0):
            proc = wit_crawl(*args, "--retry-failed", start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(seconds)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            now = state()
            assert now == old or now[1] == len(rows), f"killed after {seconds} s: {now}"
            states.add(now == old)
            if now != old:
                break
        assert True in states   # killed at least once before the retry was in place
        done = wit_crawl(*args, "--retry-failed")
        assert done.returncode == 0, done.stderr
        names, downloaded = state()
        assert downloaded == len(rows) and [n for n in names if n.endswith(".tar")] == \
            [f"{i:05d}.tar" for i in range(7)]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crawl.")]


@pytest.mark.slow
def test_an_image_centric_crawl_retries_each_image_once_with_all_its_texts(queries_dir, tmp_path):
    with TestWeb() as server:
        flaky = server.url("/flaky/m.jpg?fails=2")
        rows = [(flaky, "a dog"), (flaky, "a red dog"), (server.url("/img/n.jpg"), "a cat")]
        pool = write_pool(tmp_path / "pool.parquet", rows)
        args = [*crawl_args(queries_dir, pool, "--unit", "image"), "--out", tmp_path / "crawl"]
        assert wit_crawl(*args).returncode == 0
        assert summary_of(tmp_path / "crawl")["counts"]["downloaded"] == 1
        seen = len(server.requests())
        done = wit_crawl(*args, "--retry-failed")
        assert done.returncode == 0, done.stderr
        assert server.requests()[seen:].count(requested(flaky)) == 1
        assert summary_of(tmp_path / "crawl")["counts"]["downloaded"] == 2
    made = run_wit("shard", "--crawl", tmp_path / "crawl", "--out", tmp_path / "shards", "--workers", "1")
    assert made.returncode == 0, made.stderr
    with tarfile.open(tmp_path / "shards" / "000000.tar") as tar:
        metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    [retried] = [m for m in metas if "/flaky/" in m["url"]]
    assert sorted(t["text"] for t in retried["texts"]) == ["a dog", "a red dog"]
