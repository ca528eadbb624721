"""`wit crawl` end to end against a local test web (a server process on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli import REPO
from tests.support.crawls import DISGUISED, QUERIES, crawl_args, samples, wit_crawl, write_pool
from tests.support.faults import kill_during_overwrite
from tests.support.testweb import TestWeb
from tests.support.watgen import WatImage, WatPage, write_wat
from tests.support.witcli import assert_one_line_error
from wit.crawl import image_fetch as fetch
from wit.crawl.image_fetch import DEADLINE_ERROR, FetchPolicy, download_image
from wit.crawl.img2dataset_download import failure_reason
from wit.crawl.urls import NetworkPolicy, refusal


# ---- the download function on its own ------------------------------------------------


LOCAL = FetchPolicy(NetworkPolicy.of(["127.0.0.0/8"]))   # the test web, and nothing else inside


def test_deadline_bounds_a_whole_download(web, monkeypatch):
    monkeypatch.setattr(fetch, "_policy", LOCAL)
    for path in ("/drip", "/stall"):
        started = time.monotonic()
        _, stream, error = download_image((0, web.url(path)), 1.0, None, ["noai"])
        assert stream is None and error == DEADLINE_ERROR
        assert time.monotonic() - started < 2.0  # the timeout plus a margin, however long the server stalls


def test_redirects_follow_the_policy(web, monkeypatch):
    monkeypatch.setattr(fetch, "_policy", LOCAL)
    _, stream, error = download_image((0, web.url("/redirect?to=http://10.1.2.3/a.jpg")), 5, None, None)
    assert stream is None and error == "refused_url: redirect_private"
    _, stream, error = download_image((0, web.url("/redirect-to/img/a.jpg")), 5, None, None)
    assert error is None and stream.read(3) == b"\xff\xd8\xff"


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:70/x", "ftp://127.0.0.1/a.jpg",
                                    "data:image/png;base64,AAAA", "javascript:alert(1)", "FILE:///etc/hosts"])
def test_every_refused_redirect_scheme_has_one_reason(web, monkeypatch, target):
    """urllib rejects some schemes itself (file:, gopher:) with its own message; whatever
    the scheme, the policy answers first, and the reason is the same."""
    monkeypatch.setattr(fetch, "_policy", LOCAL)
    _, stream, error = download_image((0, web.url(f"/redirect?to={quote(target)}")), 5, None, None)
    assert stream is None and error == "refused_url: redirect_scheme"
    assert failure_reason(error) == "refused_url"


@pytest.mark.parametrize("url", DISGUISED)
def test_disguised_hosts_are_never_requested_directly_or_by_redirect(web, monkeypatch, url):
    monkeypatch.setattr(fetch, "_policy", LOCAL)   # even with the test web's network allowed
    target = url.replace(":8000", f":{web.port}")
    before = len(web.requests())
    _, stream, error = download_image((0, target), 5, None, None)
    assert stream is None and error == "refused_url: malformed"
    _, stream, error = download_image((0, web.url(f"/redirect?to={quote(target)}")), 5, None, None)
    assert stream is None and error == "refused_url: redirect_malformed"
    assert len(web.requests()) == before + 1 and web.requests()[-1].startswith("/redirect?")


@pytest.fixture
def inner_web():
    """A second test web on 127.0.0.2, and a DNS name for it (an /etc/hosts entry, removed
    afterwards): the inside of a network that a public-looking name points to."""
    name, hosts = "wit-rebind.test", Path("/etc/hosts")
    original = hosts.read_text()
    hosts.write_text(original + f"\n127.0.0.2 {name}\n")
    try:
        with TestWeb("127.0.0.2") as server:
            yield server, f"http://{name}:{server.port}"
    finally:
        hosts.write_text(original)


def test_a_name_resolving_inside_is_refused_at_connect_time(web, monkeypatch, inner_web):
    inner, base = inner_web
    url = f"{base}/img/rebind.jpg"
    assert refusal(url) is None                           # a plain name: only its addresses can tell
    monkeypatch.setattr(fetch, "_policy", FetchPolicy(NetworkPolicy.of(["127.0.0.1/32"])))   # the outer web only
    _, stream, error = download_image((0, url), 5, None, None)
    assert stream is None and error == "refused_url: resolved_loopback"
    _, stream, error = download_image((0, web.url(f"/redirect?to={quote(url)}")), 5, None, None)
    assert stream is None and error == "refused_url: resolved_loopback"
    assert inner.requests() == []                         # not one request reached the inside
    monkeypatch.setattr(fetch, "_policy", LOCAL)         # 127.0.0.0/8 named: fetched
    _, stream, error = download_image((0, web.url(f"/redirect?to={quote(url)}")), 5, None, None)
    assert error is None and stream.read(3) == b"\xff\xd8\xff"
    assert inner.requests() == ["/img/rebind.jpg"]


@pytest.mark.slow
def test_a_large_body_is_cut_and_memory_stays_flat(web):
    """A fast 1 GiB body, with and without Content-Length: refused at 32 MiB, the process's
    peak memory (in a fresh interpreter) far below the body."""
    script = (
        "import resource, sys\n"
        "from wit.crawl import image_fetch as f\n"
        "from wit.crawl.urls import NetworkPolicy\n"
        "f._policy = f.FetchPolicy(NetworkPolicy.of(['127.0.0.0/8']))\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for url in sys.argv[1:]:\n"
        "    print(f.download_image((0, url), 30, None, None)[2])\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, web.url("/big.jpg"), web.url("/big-declared.jpg")],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0, done.stderr
    cut, declared, grown_mb = done.stdout.splitlines()
    assert cut == declared == "too_large: over 33,554,432 bytes"
    assert int(grown_mb) < 100


@pytest.mark.slow
def test_a_crawl_of_bombs_and_endless_bodies_keeps_every_process_small(web, queries_dir, tmp_path):
    """The peak RSS over the whole crawl's process tree (the crawl and img2dataset's
    workers) is about the same with 1 GiB bodies and TIFF, PNG and HDR bombs in the pool as
    without them; each is refused and counted."""
    measure = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n")
    good = [(web.url(f"/img/m{i}.jpg"), f"dog {i}") for i in range(6)]
    hostile = ["/big.jpg", "/big-declared.jpg", "/bomb.tif", "/huge.png", "/bomb.hdr"]
    peaks = {}
    for name, rows in (("plain", good), ("hostile", good + [(web.url(p), f"dog at {p}") for p in hostile])):
        pool = write_pool(tmp_path / f"{name}.parquet", rows)
        done = subprocess.run(
            [sys.executable, "-c", measure, sys.executable, "-m", "wit", "crawl", "--queries", queries_dir,
             "--candidates", pool, "--out", tmp_path / name, "--allow-network", "127.0.0.0/8",
             "--processes", "2", "--threads", "8", "--timeout", "30"],
            capture_output=True, text=True, timeout=300, cwd=REPO,
            env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
        returncode, peaks[name] = map(int, done.stdout.split())
        assert returncode == 0, done.stderr
    summary = json.loads((tmp_path / "hostile" / "crawl.json").read_text())
    assert summary["counts"]["downloaded"] == len(good)
    assert {r: f["count"] for r, f in summary["download"]["failures"].items()} == \
        {"too_large": 2, "too_many_pixels": 2, "unsupported_format": 1}
    assert peaks["hostile"] < peaks["plain"] + 150, peaks   # MB; one body read whole would be 1024 more


def test_pixel_cap_applies_before_decoding(web, monkeypatch):
    monkeypatch.setattr(fetch, "_policy", FetchPolicy(LOCAL.network, max_pixels=320 * 240 - 1))
    _, stream, error = download_image((0, web.url("/img/a.jpg")), 5, None, None)
    assert stream is None and error == "image refused: too_many_pixels (320x240 pixels, over the 76,799-pixel cap)"
    monkeypatch.setattr(fetch, "_policy", LOCAL)
    _, stream, error = download_image((0, web.url("/huge.png")), 5, None, None)
    assert stream is None and error.startswith("image refused: too_many_pixels")


def test_formats_without_a_readable_header_are_refused_before_decoding(web, monkeypatch):
    """A 6 MB Radiance HDR declaring 10000x10000 pixels is decoded by OpenCV (1.2 GB) if it
    reaches img2dataset's resizer; the downloader refuses it, and an HTML page, unread."""
    monkeypatch.setattr(fetch, "_policy", LOCAL)
    for path in ("/bomb.hdr", "/html.jpg"):
        _, stream, error = download_image((0, web.url(path)), 5, None, None)
        assert stream is None and error.startswith("image refused: unsupported_format"), (path, error)


# ---- the whole stage ------------------------------------------------------------------


@pytest.mark.slow
def test_crawl_exact_counts(web, queries_dir, tmp_path):
    good = [(web.url(f"/img/dog{i}.jpg?w=600&h=400"), f"a red dog, number {i}") for i in range(8)]
    good += [(web.url(f"/img/cat{i}.png"), f"A cat. Cat number {i}") for i in range(3)]
    good += [(web.url("/redirect-to/img/bird.jpg"), "a bird")]
    failing = {
        "/404": "failed_to_download", "/500": "failed_to_download", "/redirect-loop": "failed_to_download",
        "/stall": "failed_to_download", "/drip": "failed_to_download", "/noai.jpg": "failed_to_download",
        "/huge.png": "failed_to_download", "/truncated.jpg": "failed_to_resize", "/html.jpg": "failed_to_download",
        "/bomb.hdr": "failed_to_download",
    }
    bad = [(web.url(path), f"dog at {path}") for path in failing]
    refused = [("ftp://127.0.0.1/dog.jpg", "dog"), ("http://user:pw@127.0.0.1/dog.jpg", "dog"),
               ("http://[::1/dog.jpg", "dog")]
    unmatched = [(web.url("/img/none.jpg"), "nothing to see"), (web.url("/img/dogs.jpg"), "dogs, cats")]
    pool = write_pool(tmp_path / "pool.parquet", good + bad + refused + unmatched + [(web.url("/img/e.jpg"), "")])
    out = tmp_path / "crawl"
    result = wit_crawl("--queries", queries_dir, "--out", out, "--candidates", pool, "--allow-private-hosts",
                       "--timeout", "2", "--retries", "1", "--processes", "2", "--threads", "8",
                       "--samples-per-shard", "10")
    assert result.returncode == 0, result.stderr

    summary = json.loads((out / "crawl.json").read_text())
    counts = summary["counts"]
    assert counts["read"] == len(good + bad + refused + unmatched)
    assert counts["missing_url_or_text"] == 1
    assert counts["refused_total"] == 3
    assert {k: v for k, v in counts["refused"].items() if v} == {"scheme": 1, "credentials": 1, "malformed": 1}
    assert counts["matched"] == counts["selected"] == len(good + bad)
    assert counts["downloaded"] == len(good)
    download = summary["download"]
    assert download["count"] == len(good + bad)
    assert download["failed_to_download"] == sum(v == "failed_to_download" for v in failing.values())
    assert download["failed_to_resize"] == sum(v == "failed_to_resize" for v in failing.values())
    assert download["errors"][DEADLINE_ERROR] == 2
    assert download["errors"]["Use of image disallowed by X-Robots-Tag directive"] == 1
    assert download["errors"]["HTTP Error 404: Not Found"] == 1
    assert sum(e.startswith("image refused: too_many_pixels") for e in download["errors"]) == 1
    reasons = {"/404": "http_4xx", "/500": "http_5xx", "/redirect-loop": "redirect_loop", "/stall": "timeout",
               "/drip": "timeout", "/noai.jpg": "x_robots_tag", "/huge.png": "too_many_pixels",
               "/truncated.jpg": "decode_error", "/html.jpg": "unsupported_format", "/bomb.hdr": "unsupported_format"}
    assert {r: f["count"] for r, f in download["failures"].items()} == Counter(reasons.values())
    assert all(0 < len(f["examples"]) <= 3 for f in download["failures"].values())
    assert sum(n for e, n in download["errors"].items() if e.startswith("image refused: unsupported_format")) == 2
    assert summary["seconds"]["download"] < 60

    entry = pq.read_table(out / "entry_counts.parquet").to_pylist()
    assert [(e["query_id"], e["matched"]) for e in entry] == [(0, 18), (1, 3), (2, 8), (3, 1)]
    successes = [s for s in samples(out / "download") if s["status"] == "success"]
    selected = pq.read_table(out / "selected").to_pylist()
    by_url = {row["url"]: row for row in selected}
    assert len(successes) == len(good)
    for sample in successes:
        row = by_url[sample["url"]]
        assert sample["uid"] == row["uid"] and sample["query_ids"] == row["query_ids"]
        assert sample["caption"] == row["text"]
        assert min(sample["width"], sample["height"]) <= 256  # keep_ratio, shorter side 256
    dog0 = next(s for s in successes if "dog0" in s["url"])
    assert (dog0["original_width"], dog0["original_height"], dog0["width"], dog0["height"]) == (600, 400, 384, 256)
    assert dog0["query_ids"] == [0, 2]


def test_balancing_caps_head_queries(web, queries_dir, tmp_path):
    rows = [(web.url(f"/img/d{i}.jpg"), f"dog {i}") for i in range(400)]
    rows += [(web.url(f"/img/c{i}.jpg"), f"cat {i}") for i in range(10)]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    out = tmp_path / "crawl"
    result = wit_crawl("--queries", queries_dir, "--out", out, "--candidates", pool,
                       "--allow-private-hosts", "--cap", "40", "--oversample", "1.25", "--match-only")
    assert result.returncode == 0, result.stderr
    selected = pq.read_table(out / "selected").to_pylist()
    dogs = sum(0 in r["query_ids"] for r in selected)
    assert abs(dogs - 50) < 4 * (50 * (1 - 50 / 400)) ** 0.5  # cap * oversample = 50 of 400
    assert sum(1 in r["query_ids"] for r in selected) == 10  # under the cap: all kept
    assert not (out / "download").exists()
    assert "download" not in json.loads((out / "crawl.json").read_text())


@pytest.mark.slow
def test_wat_source(web, queries_dir, tmp_path):
    pages = [WatPage(web.url(f"/page/p{i}.html"), [WatImage(f"/img/p{i}.jpg", alt=f"a dog on page {i}"),
                                                   WatImage(f"/img/q{i}.jpg", alt=None)]) for i in range(5)]
    wat = write_wat(tmp_path / "x.warc.wat.gz", pages, corrupt_json_after={2})
    out = tmp_path / "crawl"
    result = wit_crawl("--queries", queries_dir, "--out", out, "--wat", wat, "--allow-private-hosts",
                       "--processes", "1", "--threads", "4", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "crawl.json").read_text())
    assert summary["counts"]["corrupt_records"] == 1
    assert summary["counts"]["matched"] == summary["counts"]["downloaded"] == 5
    assert {s["page_url"] for s in samples(out / "download")} == {p.url for p in pages}


@pytest.mark.slow
def test_kill_9_mid_download_then_resume(web, queries_dir, tmp_path):
    rows = [(web.url(f"/img/k{i}.jpg?delay=0.2"), f"dog {i}") for i in range(40)]
    rows += [(web.url("/404"), "dog missing")]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    straight = tmp_path / "straight"
    assert wit_crawl(*crawl_args(queries_dir, pool, straight)).returncode == 0

    out = tmp_path / "killed"
    proc = wit_crawl(*crawl_args(queries_dir, pool, out), start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    building = tmp_path / ".killed.partial" / "download"   # the output is built beside its place
    deadline = time.time() + 120
    while time.time() < deadline and len(list(building.glob("*_stats.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the crawl and every process it started
    proc.wait()
    finished = len(list(building.glob("*_stats.json")))
    assert 3 <= finished < 9 and not out.exists()

    result = wit_crawl(*crawl_args(queries_dir, pool, out))
    assert result.returncode == 0, result.stderr
    def outcome(crawl: Path) -> list[tuple[str, str]]:
        """Every sample's (uid, status), from the shards' parquet files."""
        tables = [pq.read_table(p, columns=["uid", "status"]) for p in (crawl / "download").glob("*.parquet")]
        return sorted(zip(*pa.concat_tables(tables).to_pydict().values()))

    assert outcome(out) == outcome(straight)
    assert len({uid for uid, _ in outcome(out)}) == len(rows)  # each sample once
    in_tars = samples(out / "download")
    assert len({s["uid"] for s in in_tars}) == len(in_tars) == len(rows) - 1
    assert all(t.with_name(t.stem + "_stats.json").exists() for t in (out / "download").glob("*.tar"))
    assert json.loads((out / "crawl.json").read_text())["counts"]["downloaded"] == len(rows) - 1


@pytest.mark.slow
def test_pyspark_local_mode_equals_multiprocessing(web, queries_dir, tmp_path):
    rows = [(web.url(f"/img/s{i}.jpg"), f"a cat {i}") for i in range(12)] + [(web.url("/500"), "cat 500")]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    for name, extra in (("mp", []), ("spark", ["--distributor", "pyspark"])):
        result = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / name, *extra))
        assert result.returncode == 0, result.stderr
    spark, mp = samples(tmp_path / "spark" / "download"), samples(tmp_path / "mp" / "download")
    assert sorted((s["uid"], s["status"], s["sha256"]) for s in spark) == \
        sorted((s["uid"], s["status"], s["sha256"]) for s in mp)
    assert sum(s["status"] == "success" for s in spark) == 12


# ---- errors ---------------------------------------------------------------------------


def one_line_error(result, *fragments):
    assert_one_line_error(result, "crawl", *fragments)


@pytest.mark.slow
def test_input_errors(web, queries_dir, tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", [(web.url("/img/a.jpg"), "dog")])
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"query_id": pa.array([], pa.int32()), "query": pa.array([], pa.string())}),
                   empty / "queries.parquet")
    no_columns = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"link": ["x"], "alt": ["dog"]}), no_columns)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 but not really")
    cases = [
        (["--queries", tmp_path / "nowhere", "--candidates", pool], ["nowhere: no such query list", "metadata.json"]),
        (["--queries", empty, "--candidates", pool], ["the query list is empty"]),
        (["--queries", queries_dir, "--candidates", tmp_path / "none-*.parquet"], ["no candidate file matches"]),
        (["--queries", queries_dir, "--candidates", no_columns], [no_columns, "no column 'url', 'text'"]),
        (["--queries", queries_dir, "--candidates", broken], [broken, "cannot read candidate file"]),
        (["--queries", queries_dir, "--candidates", pool, "--distributor", "ray"], ["multiprocessing, pyspark"]),
    ]
    for args, fragments in cases:
        one_line_error(wit_crawl(*args, "--out", out), *fragments)
        assert not out.exists()


@pytest.mark.slow
def test_output_from_another_configuration_is_refused_and_kept(web, queries_dir, tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", [(web.url(f"/img/o{i}.jpg"), "dog") for i in range(3)])
    out = tmp_path / "out"
    args = ["--queries", queries_dir, "--candidates", pool, "--out", out, "--allow-private-hosts",
            "--processes", "1"]
    assert wit_crawl(*args).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    one_line_error(wit_crawl(*args, "--cap", "5", "--seed", "2"), out, "other settings or inputs (cap, seed)",
                   "--overwrite")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    rerun = wit_crawl(*args)  # the same settings: nothing to do
    assert rerun.returncode == 0 and "nothing to do" in rerun.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert json.loads((out / "crawl.json").read_text())["counts"]["downloaded"] == 3


def crawl_outputs(crawl: Path):
    """What a CRAWL dir holds, without timings: its tables and each downloaded (uid, status)."""
    if not crawl.exists():
        return None
    tables = {p.relative_to(crawl).as_posix(): pq.read_table(p).to_pylist()
              for p in sorted(crawl.glob("*/*.parquet")) if p.parent.name != "download"}
    tables["entry_counts"] = pq.read_table(crawl / "entry_counts.parquet").to_pylist()
    return tables, sorted((s["uid"], s["status"]) for s in samples(crawl / "download"))


@pytest.mark.slow
def test_kill_9_during_overwrite_leaves_the_old_or_the_new_output(web, queries_dir, tmp_path):
    rows = [(web.url(f"/img/w{i}.jpg?delay=0.1"), f"dog {i}" if i % 3 else f"cat {i}") for i in range(30)]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    common = ["crawl", "--queries", queries_dir, "--candidates", pool, "--allow-private-hosts", "--processes", "1",
              "--threads", "2", "--samples-per-shard", "5", "--timeout", "5"]
    kill_during_overwrite([*common, "--cap", "100"], [*common, "--cap", "4", "--oversample", "1"],
                          tmp_path / "crawl", crawl_outputs, fractions=(0.2, 0.6, 0.9, 1.0))


@pytest.mark.slow
def test_the_partitioning_is_part_of_the_fingerprint(queries_dir, tmp_path):
    """Partition markers of one partitioning are never reused under another."""
    rows = [(f"http://example.com/r{i}.jpg", f"dog {i}") for i in range(50)]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": [u for u, _ in rows], "text": [t for _, t in rows]}), pool, row_group_size=10)
    args = ["--queries", queries_dir, "--candidates", pool, "--out", tmp_path / "out", "--match-only"]
    assert wit_crawl(*args, "--rows-per-partition", "10").returncode == 0
    one_line_error(wit_crawl(*args, "--rows-per-partition", "20"), "other settings or inputs (rows_per_partition)")
    again = wit_crawl(*args, "--rows-per-partition", "20", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "out" / "candidates").glob("*.parquet"))) == 3
    assert pq.read_table(tmp_path / "out" / "selected").num_rows == 50


# ---- opt-outs and politeness ------------------------------------------------------------


def test_robots_txt_is_fetched_once_per_host_and_honoured(monkeypatch):
    monkeypatch.setattr(fetch, "_hosts", fetch._Hosts())
    monkeypatch.setattr(fetch, "_policy", FetchPolicy(LOCAL.network, respect_robots=True))
    with TestWeb(robots="private") as server:
        results = [download_image((0, server.url(p)), 5, "wit-toolkit", None)
                   for p in ("/private/a.jpg", "/img/b.jpg", "/private/c.jpg", "/img/d.jpg")]
        assert [error for _, _, error in results] == [fetch.ROBOTS_ERROR, None, fetch.ROBOTS_ERROR, None]
        assert server.requests() == ["/robots.txt", "/img/b.jpg", "/img/d.jpg"]   # once; nothing disallowed


def test_a_stalling_robots_txt_allows_after_the_timeout(monkeypatch):
    monkeypatch.setattr(fetch, "_hosts", fetch._Hosts())
    monkeypatch.setattr(fetch, "_policy", FetchPolicy(LOCAL.network, respect_robots=True))
    with TestWeb(robots="stall") as server:
        started = time.monotonic()
        _, stream, error = download_image((0, server.url("/private/a.jpg")), 1.0, "wit-toolkit", None)
        assert error is None and stream.read(3) == b"\xff\xd8\xff"
        assert time.monotonic() - started < 3.0
        assert download_image((0, server.url("/img/b.jpg")), 1.0, "wit-toolkit", None)[2] is None
        assert server.requests() == ["/robots.txt", "/private/a.jpg", "/img/b.jpg"]


@pytest.mark.slow
def test_the_stage_counts_robots_refusals_and_bounds_requests_per_host(queries_dir, tmp_path):
    def crawl(server: TestWeb, name: str, *extra) -> dict:
        rows = [(server.url(f"/{'private' if i % 4 == 0 else 'img'}/h{i}.jpg?delay=0.2"), f"dog {i}")
                for i in range(24)]
        pool = write_pool(tmp_path / f"{name}.parquet", rows)
        done = wit_crawl("--queries", queries_dir, "--candidates", pool, "--out", tmp_path / name,
                         "--allow-network", "127.0.0.0/8", "--processes", "1", "--threads", "16", *extra)
        assert done.returncode == 0, done.stderr
        return json.loads((tmp_path / name / "crawl.json").read_text())

    with TestWeb(robots="private") as server:
        summary = crawl(server, "polite", "--max-per-host", "3")
        assert summary["download"]["failures"]["robots_disallowed"]["count"] == 6
        assert summary["counts"]["downloaded"] == 18
        assert summary["parameters"]["respect_robots"] is True and summary["parameters"]["user_agent"] == "wit-toolkit"
        assert summary["download"]["robots"] == {"fetched": 1, "missing": 0, "failed": 0, "failure_examples": []}
        [host] = summary["download"]["hosts"]
        assert summary["download"]["hosts"][host] == {"successes": 18, "failures": 6}
        assert 1 < int(urllib.request.urlopen(server.url("/concurrency")).read()) <= 3 + 1   # + robots.txt
    with TestWeb(robots="private") as server:
        summary = crawl(server, "impolite", "--max-per-host", "0", "--no-respect-robots")
        assert summary["counts"]["downloaded"] == 24 and "robots_disallowed" not in summary["download"]["failures"]
        assert summary["download"]["robots"] == {"fetched": 0, "missing": 0, "failed": 0, "failure_examples": []}
        assert int(urllib.request.urlopen(server.url("/concurrency")).read()) > 4


@pytest.mark.slow
def test_robots_txt_failures_are_counted_and_crawl_delay_is_not_honoured(queries_dir, tmp_path):
    """A robots.txt that fails (500) or stalls allows everything and is counted; a missing
    one is counted as missing; `Crawl-delay: 30` does not slow the crawl (documented)."""
    expected = {"none": ({"missing": 1}, 10), "error": ({"failed": 1}, 10), "stall": ({"failed": 1}, 10),
                "delay": ({"fetched": 1}, 8)}
    for mode, (robots, downloaded) in expected.items():
        with TestWeb(robots=mode) as server:
            rows = [(server.url(f"/{'private' if i < 2 else 'img'}/{mode}{i}.jpg"), f"dog {i}") for i in range(10)]
            pool = write_pool(tmp_path / f"{mode}.parquet", rows)
            done = wit_crawl("--queries", queries_dir, "--candidates", pool, "--out", tmp_path / mode,
                             "--allow-network", "127.0.0.0/8", "--processes", "1", "--threads", "4",
                             "--timeout", "2")
            assert done.returncode == 0, done.stderr
            summary = json.loads((tmp_path / mode / "crawl.json").read_text())
            counts = summary["download"]["robots"]
            assert {k: counts[k] for k in ("fetched", "missing", "failed")} == \
                {"fetched": 0, "missing": 0, "failed": 0, **robots}, mode
            assert summary["counts"]["downloaded"] == downloaded, mode
            assert summary["seconds"]["download"] < 30, mode
            if mode in ("error", "stall"):
                [example] = counts["failure_examples"]
                assert example.startswith(server.url("/robots.txt: ")), example
                assert ("HTTP Error 500" if mode == "error" else fetch.DEADLINE_ERROR) in example


@pytest.mark.slow
def test_metaclip_lists_and_line_files_match_like_a_queries_dir(queries_dir, tmp_path):
    """`--queries` takes a QUERIES dir, a dir with only MetaCLIP's metadata.json, the file
    itself or a text file with one query per line: the same candidates."""
    rows = [(f"http://example.com/{i}.jpg", text) for i, text in
            enumerate(["a red dog", "cat, bird.", "nothing", "Bird", "dog\ncat"])]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    metaclip = tmp_path / "metaclip"
    metaclip.mkdir()
    (metaclip / "metadata.json").write_text(json.dumps(QUERIES))
    (tmp_path / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    found = {}
    for name, queries in (("dir", queries_dir), ("metaclip-dir", metaclip), ("json", metaclip / "metadata.json"),
                          ("lines", tmp_path / "queries.txt")):
        done = wit_crawl("--queries", queries, "--candidates", pool, "--out", tmp_path / name, "--match-only")
        assert done.returncode == 0, done.stderr
        found[name] = pq.read_table(tmp_path / name / "candidates").select(["url", "query_ids"]).to_pylist()
    assert found["dir"] == found["metaclip-dir"] == found["json"] == found["lines"]
    assert [r["query_ids"] for r in found["dir"]] == [[0, 2], [1, 3], [0, 1]]
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    one_line_error(wit_crawl("--queries", tmp_path / "bad.json", "--candidates", pool, "--out", tmp_path / "bad",
                             "--match-only"), "bad.json: not a JSON list of strings")


@pytest.mark.slow
def test_a_download_after_match_only_reuses_the_matched_partitions(web, queries_dir, tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", [(web.url(f"/img/m{i}.jpg"), f"dog {i}") for i in range(4)])
    args = ["--queries", queries_dir, "--candidates", pool, "--out", tmp_path / "out",
            "--allow-network", "127.0.0.0/8", "--processes", "1", "--threads", "2"]
    assert wit_crawl(*args, "--match-only").returncode == 0
    done = wit_crawl(*args)
    assert done.returncode == 0, done.stderr
    assert "1 of 1 partitions matched before" in done.stderr
    assert json.loads((tmp_path / "out" / "crawl.json").read_text())["counts"]["downloaded"] == 4
