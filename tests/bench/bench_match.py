"""Benchmark: substring matching, `wit crawl`'s QueryMatcher against MetaCLIP's per-text loop.

Both match the same texts against the same queries and must give identical ids, on four
mixes: short alt-text-like captions of made-up words against 500,000 and 92,000 queries
of those words, and long texts (six real sentences of the Wikipedia excerpt, about 700
characters) against 92,000 queries of real words and bigrams of the excerpt and against
those plus 408,000 made-up ones. The baseline is MetaCLIP's approach: space each text,
walk a pyahocorasick automaton over it, collect ids in a set. Each side is timed
producing its own output (MetaCLIP: Python lists; wit: the Arrow list column the crawl
writes), best of 3, after the same set-up. Figures are texts per second on one core;
the headline ratio is the first mix's, `worst_ratio` the lowest; target >= 3x on each.
Worldwide mixes (MetaCLIP 2's entry padding, `QueryMatcher(worldwide=True)`) against
MetaCLIP 2's per-text automaton loop: Chinese-like and Japanese-like texts (CJK words
written without spaces, kana particles, CJK punctuation) against 200,000 entries of CJK
words, kana words and mixed ones, and the English short mix under the worldwide rule.
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
from collections import Counter
from pathlib import Path

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit.crawl.match import QueryMatcher
from wit.formats.text import spaced

TARGET = 3.0
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.bench.realtext import real_pages  # noqa: E402
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


CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]           # common-block ideographs
KANA = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
CJK_PUNCTUATION = ["、", "。", "，", "「", "」", "！", "？", "（", "）"]


def cjk_mix(count: int, entries: int, kana: bool, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(texts, entries): texts of 8 to 40 words of 1 to 3 ideographs (Zipf-distributed),
    without spaces, with kana particles between some words (`kana`), CJK punctuation and
    a few Latin words; entries are ideograph words, words ending or starting in kana, and
    two-word phrases."""
    words = list(dict.fromkeys("".join(rng.choice(CJK, size=rng.integers(1, 4))) for _ in range(entries * 2)))
    kana_words = ["".join(rng.choice(KANA, size=rng.integers(2, 5))) for _ in range(2000)]
    texts = []
    ranks = np.minimum(rng.zipf(1.25, size=count * 40), len(words)) - 1
    at = 0
    for length in rng.integers(8, 41, size=count):
        parts = []
        for r in ranks[at:at + length]:
            parts.append(words[r])
            roll = rng.random()
            if kana and roll < 0.35:
                parts.append(kana_words[int(rng.integers(0, 50))])
            elif roll < 0.45:
                parts.append(CJK_PUNCTUATION[int(rng.integers(0, len(CJK_PUNCTUATION)))])
            elif roll < 0.47:
                parts.append(" Tokyo ")
        at += length
        texts.append("".join(parts))
    listed = words[:int(entries * 0.7)] + kana_words[:500]
    listed += [words[int(a)] + words[int(b)] for a, b in rng.integers(0, 3000, size=(entries - len(listed), 2))]
    return texts, list(dict.fromkeys(listed))[:entries]


def metaclip2_match(entries: list[str], texts: list[str]) -> tuple[list[list[int]], float]:
    from tests.support import metaclip2

    built = metaclip2.automaton(entries)
    return best_of(lambda: [metaclip2.substr_match(built, text) for text in texts])


def worldwide_match(entries: list[str], texts: list[str], batch: int = 100_000) -> tuple[list[list[int]], float]:
    matcher = QueryMatcher(entries, worldwide=True)
    parts, seconds = best_of(lambda: [matcher.match(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return [ids for part in parts for ids in part.to_pylist()], seconds


def real_mix(count: int, synthetic: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(long texts, 92k real queries, the same plus made-up ones up to 500k)."""
    sentences = [s for _, page in real_pages() for s in page]
    rng = np.random.default_rng(1)
    texts = [" ".join(sentences[j] for j in rng.integers(0, len(sentences), 6)) for _ in range(count)]
    words = Counter(w for s in sentences for w in s.split())
    bigrams = Counter(f"{a} {b}" for s in sentences for a, b in zip(s.split(), s.split()[1:]))
    real = list(dict.fromkeys([w for w, _ in words.most_common(60_000)] + [b for b, _ in bigrams.most_common()]))
    return texts, real[:92_000], list(dict.fromkeys(real[:92_000] + synthetic))[:500_000]


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
    small_queries, small_words = make_queries(92_000, np.random.default_rng(2))
    long_texts, real_small, real_large = real_mix(args.texts // 5, queries)
    mixes = {"short_500k": (texts, queries), "short_92k": (make_texts(args.texts, small_words, rng), small_queries),
             "long_92k": (long_texts, real_small), "long_500k": (long_texts, real_large)}
    worldwide = {"zh_200k_worldwide": cjk_mix(args.texts // 2, 200_000, False, np.random.default_rng(3)),
                 "ja_200k_worldwide": cjk_mix(args.texts // 2, 200_000, True, np.random.default_rng(4)),
                 "short_500k_worldwide": (texts, queries)}
    mixes |= {name: (mix[0], mix[1]) for name, mix in worldwide.items()}
    results, identical = {}, True
    for name, (mix_texts, mix_queries) in mixes.items():
        world = name.endswith("_worldwide")
        baseline, base_seconds = (metaclip2_match if world else metaclip_match)(mix_queries, mix_texts)
        ours, our_seconds = (worldwide_match if world else wit_match)(mix_queries, mix_texts)
        identical &= baseline == ours
        matches = sum(map(len, ours))
        results[name] = {"baseline": len(mix_texts) / base_seconds, "wit": len(mix_texts) / our_seconds}
        results[name]["ratio"] = results[name]["wit"] / results[name]["baseline"]
        print(f"{name}: {len(mix_texts):,} texts x {len(mix_queries):,} queries, {matches:,} matches "
              f"({matches / len(mix_texts):.1f} per text), identical: {baseline == ours}; "
              f"MetaCLIP{' 2' if world else ''} "
              f"{results[name]['baseline']:,.0f}, wit {results[name]['wit']:,.0f} texts/s/core: "
              f"{results[name]['ratio']:.2f}x")
    base_rate, our_rate, ratio = (results["short_500k"][k] for k in ("baseline", "wit", "ratio"))
    worst = min(r["ratio"] for r in results.values())
    print(f"ratio {ratio:.2f}x, worst mix {worst:.2f}x (target >= {TARGET}x on each)")

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
        "identical": identical, "met": identical and worst >= TARGET, "worst_ratio": round(worst, 3),
        "mix_ratios": {name: round(r["ratio"], 2) for name, r in results.items()},
        "match_only_peak_rss_mb": {str(m["rows"]): m["peak_rss_mb"] for m in memory},
        "peak_rss_mb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


if __name__ == "__main__":
    main()
