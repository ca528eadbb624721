"""Benchmark: substring matching, `wit crawl`'s QueryMatcher against MetaCLIP's per-text loop.

Both match the same texts against the same 500,000 queries and must give identical ids.
The baseline is MetaCLIP's approach: space each text, walk a pyahocorasick automaton
over it, collect ids in a set. Each side is timed producing its own output (MetaCLIP:
Python lists; wit: the Arrow list column the crawl writes), best of 3, after the same
set-up. Figures are texts per second on one core; target >= 2x.
Then the peak memory of `wit crawl --match-only` (one process) on a 1M-row and a 4M-row
pool, each run in a fresh child: it must stay flat as the pool grows.

    python tests/bench/bench_match.py [--texts 100000] [--queries 500000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit.crawl.match import QueryMatcher
from wit.formats.text import spaced

TARGET = 2.0
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "si", "po", "de", "an", "el", "or", "us", "in", "ba", "ve"]
PUNCTUATION = [",", ".", "!", ":", ";", "?"]


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Distinct made-up words of 2 to 5 syllables, some capitalised."""
    words: dict[str, None] = {}
    while len(words) < size:
        n = rng.integers(2, 6, size=size)
        picks = rng.integers(0, len(SYLLABLES), size=(size, 5))
        for count, row in zip(n, picks):
            word = "".join(SYLLABLES[i] for i in row[:count])
            words[word.capitalize() if row[0] % 7 == 0 else word] = None
    return list(words)[:size]


def make_queries(count: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(queries, words): 70% single words, 30% two-word phrases of the same words."""
    words = vocabulary(int(count * 0.75), rng)
    singles = words[: int(count * 0.7)]
    pairs: dict[str, None] = {}
    while len(pairs) < count - len(singles):
        a, b = rng.integers(0, 20000, size=2)  # phrases of frequent words, so they occur
        pairs[f"{words[a]} {words[b]}"] = None
    return singles + list(pairs), words


def make_texts(count: int, words: list[str], rng: np.random.Generator) -> list[str]:
    """Alt-text-like strings: 3-15 Zipf-distributed words with some punctuation."""
    ranks = np.minimum(rng.zipf(1.3, size=count * 16), len(words)) - 1
    lengths = rng.integers(3, 16, size=count)
    texts, at = [], 0
    for length in lengths:
        tokens = [words[r] for r in ranks[at : at + length]]
        at += length
        if length > 5:
            tokens[rng.integers(1, length)] += PUNCTUATION[length % len(PUNCTUATION)]
        texts.append(" ".join(tokens))
    return texts


REPEAT = 3  # each side is timed REPEAT times and its best time kept (this machine is noisy)


def metaclip_match(queries: list[str], texts: list[str]) -> tuple[list[list[int]], float]:
    automaton = ahocorasick.Automaton()
    for query_id, query in enumerate(queries):
        automaton.add_word(f" {query} ", (query_id, query))
    automaton.make_automaton()

    def run() -> list[list[int]]:
        result = []
        for text in texts:
            found = set()
            for _, (query_id, _) in automaton.iter(spaced(text)):
                found.add(query_id)
            result.append(sorted(found))
        return result

    return best_of(run)


def wit_match(queries: list[str], texts: list[str], batch: int = 100_000) -> tuple[list[list[int]], float]:
    matcher = QueryMatcher(queries)

    def run() -> list[pa.ListArray]:  # Arrow lists are what the crawl writes to Parquet
        return [matcher.match(texts[i : i + batch]) for i in range(0, len(texts), batch)]

    parts, seconds = best_of(run)
    return [ids for part in parts for ids in part.to_pylist()], seconds


def best_of(run):
    """The result of `run()` and its best wall time over REPEAT runs."""
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return result, min(times)


def memory_run(rows: int, queries_dir: str, work: str) -> dict:
    """Peak RSS of `wit crawl --match-only --processes 1` on a `rows`-row pool."""
    rng = np.random.default_rng(rows)
    _, words = make_queries(50_000, np.random.default_rng(0))
    pool = os.path.join(work, f"pool-{rows}.parquet")
    with pq.ParquetWriter(pool, pa.schema([("url", pa.string()), ("text", pa.string())])) as writer:
        for start in range(0, rows, 200_000):
            n = min(200_000, rows - start)
            writer.write_table(pa.table({
                "url": [f"http://img{i % 97}.example.com/{i}.jpg" for i in range(start, start + n)],
                "text": make_texts(n, words, rng),
            }), row_group_size=200_000)
    out = os.path.join(work, f"crawl-{rows}")
    # /usr/bin/time reports the peak RSS of the crawl's whole process tree. Measuring from
    # here would not do: Linux keeps a process's peak across fork and exec, so a child
    # of this (large) process would start at this process's size.
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, "-m", "wit", "crawl", "--queries", queries_dir,
         "--out", out, "--candidates", pool, "--match-only", "--processes", "1"],
        capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    if done.returncode:
        raise RuntimeError(f"wit crawl failed:\n{done.stderr[-2000:]}")
    peak_kb = int(next(line for line in done.stderr.splitlines() if line.startswith("PEAK_KB")).split()[1])
    return {"rows": rows, "peak_rss_mb": round(peak_kb / 1024), "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    queries, words = make_queries(args.queries, rng)
    texts = make_texts(args.texts, words, rng)
    baseline, base_seconds = metaclip_match(queries, texts)
    ours, our_seconds = wit_match(queries, texts)
    identical = baseline == ours
    base_rate, our_rate = len(texts) / base_seconds, len(texts) / our_seconds
    ratio = our_rate / base_rate
    matches = sum(map(len, ours))
    print(f"{len(texts):,} texts x {len(queries):,} queries, {matches:,} matches "
          f"({matches / len(texts):.1f} per text); outputs identical: {identical}")
    print(f"MetaCLIP per-text loop : {base_rate:12,.0f} texts/s/core")
    print(f"wit QueryMatcher       : {our_rate:12,.0f} texts/s/core")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x)")

    memory = []
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as work:
            queries_dir = os.path.join(work, "queries")
            os.makedirs(queries_dir)
            pq.write_table(pa.table({"query_id": pa.array(range(len(queries)), pa.int32()), "query": queries}),
                           os.path.join(queries_dir, "queries.parquet"))
            for rows in (1_000_000, 4_000_000):
                memory.append(memory_run(rows, queries_dir, work))
                print(f"wit crawl --match-only, {rows:,} rows: peak RSS {memory[-1]['peak_rss_mb']} MB, "
                      f"{memory[-1]['seconds']} s")
    print(json.dumps({
        "bench": "match", "metric": "texts/s/core", "texts": len(texts), "queries": len(queries),
        "baseline": round(base_rate), "wit": round(our_rate), "ratio": round(ratio, 3), "target": TARGET,
        "identical": identical, "met": identical and ratio >= TARGET,
        "match_only_peak_rss_mb": {str(m["rows"]): m["peak_rss_mb"] for m in memory},
        "peak_rss_mb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


if __name__ == "__main__":
    main()
