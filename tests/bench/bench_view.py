"""Benchmark: `wit view` page latency on a large SHARDS dir, against answering the same
page by scanning the shards (what `wit inspect --show` does: tar headers in order, the
json and txt of the samples it shows).

A synthetic SHARDS dir of N samples (default 1,000,000: shards of 10,000 small JPEGs with
json and txt; queries drawn from a Zipf law over 20,000 queries in 5 languages), a FILTER
dir made for it (removed.parquet: 5% near-duplicates matching a kept uid, 200 samples
matching an evaluation image) and an EMBED dir (N random 512-d unit vectors). Measured:
the index build (wit.view.index.build, all cores) and the caches; then, through HTTP to
`wit view`'s app served in this process, the median and p95 latency of the first page of
all samples, a deep page of all samples (90% in), a deep page of one query (90% into its
samples), a sample page, a thumbnail, a deep page of what a filter removed, and "more like
this" over the N image vectors. The baseline answers each by a scan: headers of the
shards in order (and, for a query, every json up to the page), the removed rows read from
removed.parquet, and for "more like this" the embeddings read from the EMBED dir into a
faiss IndexFlatIP (what `python -m train.search --embeddings` does per call). Rates are
pages per second (1 / median); the headline ratio is the deep query page's.

    python tests/bench/bench_view.py [--samples 1000000] [--requests 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from wit.formats.embeddings import embedding_file, manifest_sha256, schema
from wit.formats.processes import worker_pool
from wit.formats.shards import shard_name
from wit.formats.tars import read_member, scan_tar, tar_chunks
from wit.formats.uids import url_uids
from wit.view import index as view_index
from wit.view.images import THUMBNAIL, resized_jpeg

PER_SHARD, QUERIES, LANGUAGES, DIM = 10_000, 20_000, ("en", "de", "ja", "zh", "fr"), 512
PAGE = 48
TARGET = 10.0   # the deep query page: at least this many times the scan's rate


def pictures() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=60)
        out.append(buffer.getvalue())
    return out


def plan(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every sample's uid (sorted, as `wit shard` writes them), query and language."""
    uids = sorted(url_uids(f"http://bench.example/{i}.jpg" for i in range(n)))
    rng = np.random.default_rng(1)
    ranks = np.minimum(rng.zipf(1.3, n), QUERIES) - 1
    return uids, ranks.astype(np.int64), rng.integers(0, len(LANGUAGES), n)


def write_shard(out: str, index: int, uids: list[str], queries: list[int], langs: list[int]) -> dict:
    images = pictures()

    def samples():
        for k, (uid, q, lang) in enumerate(zip(uids, queries, langs)):
            meta = {"uid": uid, "url": f"http://bench.example/{uid}.jpg", "query_ids": [q], "lang": LANGUAGES[lang],
                    "width": 64, "height": 48, "original_width": 640, "original_height": 480, "sha256": ""}
            yield uid, [("jpg", images[(index + k) % len(images)]), ("json", json.dumps(meta).encode()),
                        ("txt", f"a photo of query {q} in {LANGUAGES[lang]}, sample {uid[:8]}".encode())]

    path = os.path.join(out, shard_name(index))
    import hashlib

    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as f:
        for chunk in tar_chunks(samples()):
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return {"name": shard_name(index), "samples": len(uids), "bytes": size, "sha256": digest.hexdigest()}


def make_shards(root: Path, uids, queries, langs) -> None:
    root.mkdir(parents=True)
    n = len(uids)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        entries = list(pool.map(write_shard, [str(root)] * (-(-n // PER_SHARD)),
                                range(-(-n // PER_SHARD)),
                                *zip(*[(uids[s:s + PER_SHARD], queries[s:s + PER_SHARD].tolist(),
                                        langs[s:s + PER_SHARD].tolist()) for s in range(0, n, PER_SHARD)])))
    manifest = {"tool": "bench", "shards": entries, "total_samples": n, "total_bytes": sum(e["bytes"] for e in entries),
                "cap": 20_000, "counts": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "sizes.json").write_text(json.dumps({e["name"]: e["samples"] for e in entries}))
    (root / "datacard.json").write_text(json.dumps({"cap": 20_000, "totals": {"final_samples": n}}))


def removals(n: int) -> tuple[set[int], list[int]]:
    """The samples matching an evaluation image (about 200), and the near-duplicates (every
    20th other sample, each of the one before it)."""
    leaks = set(range(7, n, max(1, n // 200)))
    return leaks, [i for i in range(20, n, 20) if i not in leaks]


def make_filtered(root: Path, shards: Path, uids: list[str]) -> None:
    """A FILTER dir of `shards` with the removals of `removals`, and its 50-image evaluation set."""
    evals = root.parent / "evalbench"
    for label in range(2):
        (evals / f"c{label}").mkdir(parents=True)
        for i, image in enumerate(pictures()[:25]):
            (evals / f"c{label}" / f"{i:02d}.jpg").write_bytes(image)
    root.mkdir(parents=True)
    leaks, near = removals(len(uids))
    rows = {"uid": [uids[i] for i in sorted(leaks)] + [uids[i] for i in near],
            "filter": ["decontaminate"] * len(leaks) + ["near_dup"] * len(near),
            "reason": ["phash"] * (len(leaks) + len(near)),
            "match": [f"evalbench:{i % 50}" for i in sorted(leaks)] + [uids[i - 1] for i in near],
            "value": [2.0] * len(leaks) + [3.0] * len(near)}
    pq.write_table(pa.table(rows), root / "removed.parquet")
    (root / "contamination.json").write_text(json.dumps({"evalbench": {"path": str(evals), "images": 50}}))
    (root / "manifest.json").write_text(json.dumps({
        "tool": "wit filter", "shards": [], "total_samples": 0, "total_bytes": 0, "cap": 20_000, "counts": {},
        "inputs": {"shards": str(shards.resolve()), "manifest_sha256": manifest_sha256(str(shards))}}))


def make_embed(root: Path, shards: Path, uids: list[str]) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    entries = []
    for index, start in enumerate(range(0, len(uids), PER_SHARD)):
        part = uids[start:start + PER_SHARD]
        vectors = rng.standard_normal((len(part), DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        image = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
        text = pa.nulls(len(part), pa.list_(pa.float32(), DIM))
        pq.write_table(pa.Table.from_arrays([pa.array(part), image, text], schema=schema(DIM)),
                       root / embedding_file(shard_name(index)), compression="none")
        entries.append({"name": shard_name(index), "samples": len(part), "images": len(part)})
    (root / "embed.json").write_text(json.dumps({
        "tool": "bench", "model": "random", "dim": DIM, "shards_dir": str(shards.resolve()),
        "manifest_sha256": manifest_sha256(str(shards)), "shards": entries}))


# ---- the baseline: answer a page by scanning the shards ------------------------------------


def shard_paths(shards: Path) -> list[str]:
    return [str(shards / e["name"]) for e in json.loads((shards / "manifest.json").read_text())["shards"]]


def show(path: str, members: dict) -> tuple[dict, str]:
    with open(path, "rb") as f:
        return json.loads(read_member(f, members["json"])), read_member(f, members["txt"]).decode()


def scan_page(paths: list[str], offset: int) -> list:
    """Samples offset..offset+PAGE: tar headers in order, json and txt of those shown."""
    seen, page = 0, []
    for path in paths:
        for key, members in scan_tar(path).samples:
            if seen >= offset:
                page.append(show(path, members))
                if len(page) == PAGE:
                    return page
            seen += 1
    return page


def scan_query_page(paths: list[str], lang: str, query: int, offset: int) -> list:
    """The page of one (language, query)'s samples at `offset`: every json read up to it."""
    seen, page = 0, []
    for path in paths:
        with open(path, "rb") as f:
            for key, members in scan_tar(path).samples:
                meta = json.loads(read_member(f, members["json"]))
                if meta.get("lang") == lang and query in meta["query_ids"]:
                    if seen >= offset:
                        page.append((meta, read_member(f, members["txt"])))
                        if len(page) == PAGE:
                            return page
                    seen += 1
    return page


def scan_find(paths: list[str], uids: set[str]) -> dict:
    found = {}
    for path in paths:
        for key, members in scan_tar(path).samples:
            if key in uids:
                found[key] = (path, members)
                if len(found) == len(uids):
                    return found
    return found


def scan_sample(paths, uid):
    path, members = scan_find(paths, {uid})[uid]
    return show(path, members)


def scan_thumbnail(paths, uid):
    path, members = scan_find(paths, {uid})[uid]
    with open(path, "rb") as f:
        return resized_jpeg(read_member(f, members["jpg"]), THUMBNAIL)


def scan_removed(paths, filtered: Path, offset: int):
    """A page of what near_dup removed, each with its kept twin."""
    table = pq.read_table(filtered / "removed.parquet").to_pydict()
    rows = [(u, m) for u, m, f in zip(table["uid"], table["match"], table["filter"]) if f == "near_dup"]
    rows = sorted(rows)[offset:offset + PAGE]
    found = scan_find(paths, {u for u, _ in rows} | {m for _, m in rows})
    return [(show(*found[u]), show(*found[m])) for u, m in rows]


def scan_similar(embed: Path, uid: str):
    import faiss

    from wit.formats.embeddings import read_embeddings

    table = read_embeddings(str(embed))
    vectors = np.asarray(pa.compute.list_flatten(table["image"]).to_numpy(), np.float32).reshape(-1, DIM)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    row = table["uid"].to_pylist().index(uid)
    return index.search(vectors[row:row + 1], PAGE)


# ---- measuring ---------------------------------------------------------------------------------


def timed(call, repeats: int, budget: float = float("inf")) -> list[float]:
    """The times of `repeats` calls, fewer when they have taken `budget` seconds (at least one)."""
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
        if sum(out) > budget:
            break
    return out


def serve(view):
    import logging

    from werkzeug.serving import make_server

    from wit.view.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no line per request
    server = make_server("127.0.0.1", 0, create_app(view), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(port: int, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30, help="requests per page kind (wit)")
    parser.add_argument("--baseline-requests", type=int, default=3, help="per page kind (the scan)")
    parser.add_argument("--baseline-budget", type=float, default=10.0,
                        help="seconds of scans per page kind, after which no more are timed (at least one is)")
    parser.add_argument("--keep", default="", help="build the data here and keep it (reused when present)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_view_"))
    shards, filtered, embed, cache = work / "shards", work / "filtered", work / "embed", work / "cache"
    n = args.samples
    try:
        started = time.perf_counter()
        uids, queries, langs = plan(n)
        manifest = shards / "manifest.json"
        reused = manifest.exists() and json.loads(manifest.read_text())["total_samples"] == n
        if not reused:
            shutil.rmtree(work, ignore_errors=True)
            make_shards(shards, uids, queries, langs)
            make_filtered(filtered, shards, uids)
            make_embed(embed, shards, uids)
        made = time.perf_counter() - started
        print(f"{'reused' if reused else 'made'} {n:,} samples in {len(shard_paths(shards))} shards, a FILTER and "
              f"an EMBED dir ({made:.0f}s)", file=sys.stderr, flush=True)
        shutil.rmtree(cache, ignore_errors=True)

        from wit.view.run import ViewConfig, prepare
        from wit.view.sources import open_shards

        opened = open_shards(str(shards))
        started = time.perf_counter()
        report = view_index.build(opened.root, opened.manifest, str(cache / view_index.INDEX_FILE),
                                  opened.identity, os.cpu_count() or 1, view_index.Progress("index"),
                                  pool_factory=lambda w: worker_pool(w, "wit.view.index"))
        index_seconds = time.perf_counter() - started
        index_mb = sum(f.stat().st_size for f in cache.iterdir()) / 1e6
        started = time.perf_counter()
        view, _ = prepare(ViewConfig(shards=str(shards), embeddings=str(embed), filtered=str(filtered),
                                     index=str(cache), index_only=True))
        caches_seconds = time.perf_counter() - started
        server = serve(view)
        port = server.server_port

        rng = np.random.default_rng(3)
        top = int(np.bincount(queries).argmax())   # the largest query, in English: 90% into its samples
        of_top = np.flatnonzero((queries == top) & (langs == 0))
        position = int(0.9 * len(of_top))
        query_after = int(of_top[position - 1])
        _, near = removals(n)
        removed_at = int(0.9 * len(near))
        removed_after = near[removed_at - 1]
        deep = int(0.9 * n)
        picks = [uids[int(i)] for i in rng.integers(0, n, args.requests)]
        paths = shard_paths(shards)
        pages = {
            "first page": (lambda i: "/samples", lambda: scan_page(paths, 0)),
            "deep page": (lambda i: f"/samples?after={deep - 1}", lambda: scan_page(paths, deep)),
            "deep query page": (lambda i: f"/queries/{LANGUAGES[0]}/{top}?after={query_after}",
                                lambda: scan_query_page(paths, LANGUAGES[0], top, position)),
            "sample page": (lambda i: f"/sample/{picks[i]}", lambda: scan_sample(paths, picks[0])),
            "thumbnail": (lambda i: f"/thumb/{picks[i]}.jpg", lambda: scan_thumbnail(paths, picks[0])),
            "removed page": (lambda i: f"/removed/near_dup/phash?after={removed_after}",
                             lambda: scan_removed(paths, filtered, removed_at)),
            "more like this": (lambda i: f"/similar/{picks[i]}", lambda: scan_similar(embed, picks[0])),
        }
        results = {}
        for name, (url, baseline) in pages.items():
            get(port, url(0))   # warm: the page's first request
            counter = iter(range(args.requests))
            ours = timed(lambda: get(port, url(next(counter))), args.requests)
            theirs = timed(baseline, args.baseline_requests, budget=args.baseline_budget)
            results[name] = {"wit": summary(ours), "baseline": summary(theirs),
                             "ratio": round(statistics.median(theirs) / statistics.median(ours), 1)}
            print(f"{name:16s} wit median {results[name]['wit']['median_ms']:9.2f} ms  p95 "
                  f"{results[name]['wit']['p95_ms']:9.2f} ms | scan median {results[name]['baseline']['median_ms']:10.1f}"
                  f" ms | {results[name]['ratio']:,.1f}x", flush=True)
        server.shutdown()
        headline = results["deep query page"]
        wit_rate, base_rate = 1000 / headline["wit"]["median_ms"], 1000 / headline["baseline"]["median_ms"]
        print(f"index build: {n:,} samples in {index_seconds:.1f}s ({n / index_seconds:,.0f} samples/s, "
              f"{os.cpu_count()} workers), index {index_mb:,.0f} MB; filter and vector caches {caches_seconds:.1f}s")
        print(json.dumps({"bench": "view", "metric": f"deep query page/s at {n:,} samples", "samples": n,
                          "baseline": round(base_rate, 3), "wit": round(wit_rate, 1),
                          "ratio": round(wit_rate / base_rate, 1), "target": TARGET,
                          "met": wit_rate / base_rate >= TARGET and all(r["wit"]["p95_ms"] < 1000 for r in results.values()),
                          "index_build_s": round(index_seconds, 1), "index_samples_per_s": round(n / index_seconds),
                          "index_mb": round(index_mb), "caches_s": round(caches_seconds, 1),
                          "pages": {name: f"median {r['wit']['median_ms']:,} ms, p95 {r['wit']['p95_ms']:,} ms "
                                          f"(scan {r['baseline']['median_ms']:,.0f} ms, {r['ratio']:,}x)"
                                    for name, r in results.items()}}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
