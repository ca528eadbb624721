"""Benchmark: `wit build-queries` against mwxml + mwparserfromhell + str.split() counting.

Both read the real English Wikipedia excerpt of the gensim wheel (bz2, 206 pages). Each
measurement runs in a fresh child process so that its peak memory is its own; the
figure is MB of article wikitext per second per core, best of `--repeat` runs.
Target: wit >= 3x the baseline per core, with a query list free of markup residue.

    python tests/bench/bench_build_queries.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import bz2
import json
import multiprocessing
import os
import re
import resource
import tempfile
import time
from collections import Counter

from wit.enwiki_excerpt import enwiki_excerpt

TARGET = 3.0
RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\||<[^>]*>|\bref\b|\bthumb\b|\d*px\b|&\w+;")
# Full English Wikipedia pages-articles: about 100 GB of XML, nearly all of it article
# wikitext (94% in the excerpt); a 64-core node with the multistream dump decompresses
# in every worker, so counting scales with the cores.
FULL_WIKITEXT_MB = 100_000
NODE_CORES = 64


def baseline(path: str) -> dict:
    """One process: mwxml pages, mwparserfromhell strip_code, str.split counting."""
    import mwparserfromhell
    import mwxml

    started = time.perf_counter()
    counts: Counter[str] = Counter()
    wikitext = 0
    with bz2.open(path) as f:
        for page in mwxml.Dump.from_file(f):
            if page.namespace != 0 or page.redirect:
                continue
            for revision in page:
                text = revision.text or ""
                wikitext += len(text.encode("utf-8"))
                counts.update(mwparserfromhell.parse(text).strip_code().split())
    return {"seconds": time.perf_counter() - started, "wikitext_bytes": wikitext, "vocabulary": len(counts)}


def wit(path: str, workers: int) -> dict:
    """`wit build-queries` on the same file, thresholds lowered to the excerpt's size."""
    from wit.queries.build import BuildConfig, run as build_queries

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        stats = build_queries(BuildConfig(
            wiki_dumps=(path,), out=os.path.join(tmp, "q"), min_count=20, min_pmi=10.0,
            workers=workers, chunk_mb=1.0,
        ))
        seconds = time.perf_counter() - started
        with open(os.path.join(tmp, "q", "metadata.json"), encoding="utf-8") as f:
            queries = json.load(f)
    return {"seconds": seconds, "wikitext_bytes": stats["pages"]["wikitext_bytes"],
            "queries": len(queries), "residue": [q for q in queries if RESIDUE.search(q)][:10]}


def _child(target, args, queue) -> None:
    import logging

    logging.disable(logging.INFO)
    os.environ["TQDM_DISABLE"] = "1"
    result = target(*args)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    queue.put({**result, "peak_rss_mb": round(max(own, children) / 1024, 1)})


def measure(target, *args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(target, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    path = str(enwiki_excerpt())
    cores = os.cpu_count() or 1

    base = best([measure(baseline, path) for _ in range(args.repeat)])
    one = best([measure(wit, path, 1) for _ in range(args.repeat)])
    many = best([measure(wit, path, cores) for _ in range(args.repeat)])

    def per_core(run: dict, n: int) -> float:
        return run["wikitext_bytes"] / 1e6 / run["seconds"] / n

    base_rate, one_rate, many_rate = per_core(base, 1), per_core(one, 1), per_core(many, cores)
    ratio = one_rate / base_rate
    projected_minutes = FULL_WIKITEXT_MB / (min(one_rate, many_rate) * NODE_CORES) / 60
    print(f"input: {path} ({base['wikitext_bytes'] / 1e6:.1f} MB of article wikitext)")
    print(f"{'':34}{'MB/s/core':>10}{'peak RSS MB':>13}")
    print(f"{'baseline (mwxml+mwparserfromhell)':34}{base_rate:10.2f}{base['peak_rss_mb']:13.0f}")
    print(f"{'wit build-queries --workers 1':34}{one_rate:10.2f}{one['peak_rss_mb']:13.0f}")
    print(f"{f'wit build-queries --workers {cores}':34}{many_rate:10.2f}{many['peak_rss_mb']:13.0f}")
    print(f"ratio per core: {ratio:.2f}x (target >= {TARGET}x); markup residue in "
          f"{one['queries']} queries: {len(one['residue'])} {one['residue']}")
    print(f"projection: full English Wikipedia (~{FULL_WIKITEXT_MB // 1000} GB) on {NODE_CORES} cores: "
          f"~{projected_minutes:.0f} min of counting")
    print(json.dumps({
        "bench": "build_queries", "metric": "MB/s/core of article wikitext",
        "baseline": round(base_rate, 3), "wit": round(one_rate, 3),
        "wit_all_cores_per_core": round(many_rate, 3), "cores": cores,
        "ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET and not one["residue"],
        "peak_rss_mb": {"baseline": base["peak_rss_mb"], "wit_1": one["peak_rss_mb"],
                        "wit_all": many["peak_rss_mb"]},
        "residue": len(one["residue"]), "projected_minutes_64_cores": round(projected_minutes, 1),
    }))


if __name__ == "__main__":
    main()
