"""Benchmark: balancing throughput on 10M synthetic candidates (one core).

wit's `balanced` (deterministic draws from (seed, uid, query_id), vectorised) against
MetaCLIP's balancing loop (per candidate: keep if `random.random() < p[q]` for any of
its queries; not reproducible across runs or partitionings). Candidates have 1-3 query
ids drawn Zipf-like over 500k queries, so head queries are far above the cap. Both keep
about the same number of candidates; the figure is candidates per second per core.

    python tests/bench/bench_balance.py [--candidates 10000000]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import pyarrow as pa

from wit.formats.balance import balanced

CAP = 20_000
QUERIES = 500_000
CHUNK = 1_000_000  # the crawl balances one partition at a time


def synthetic_pool(n: int, rng: np.random.Generator) -> tuple[pa.StringArray, pa.ListArray]:
    """n random 32-hex-digit uids and list<int32> query ids (built from buffers, fast)."""
    hex_digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    data = hex_digits[rng.integers(0, 16, size=n * 32, dtype=np.uint8)]
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    uids = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))
    lengths = rng.integers(1, 4, size=n)
    values = (np.minimum(rng.zipf(1.2, size=int(lengths.sum())), QUERIES) - 1).astype(np.int32)
    list_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return uids, pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values))


def metaclip_balance(query_ids: list[list[int]], probability: np.ndarray) -> int:
    """MetaCLIP's per-candidate sampling loop; returns how many it keeps."""
    p = probability.tolist()
    kept = 0
    for ids in query_ids:
        for query_id in ids:
            if random.random() < p[query_id]:
                kept += 1
                break
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    uids, query_ids = synthetic_pool(args.candidates, rng)
    matched = np.bincount(query_ids.flatten().to_numpy(), minlength=QUERIES)
    probability = CAP / np.maximum(matched, CAP)

    started = time.perf_counter()
    ours = sum(int(balanced(uids[i : i + CHUNK], query_ids[i : i + CHUNK], probability, seed=0).sum())
               for i in range(0, args.candidates, CHUNK))
    our_seconds = time.perf_counter() - started

    as_lists = query_ids.to_pylist()  # MetaCLIP holds its matches as Python lists
    random.seed(0)
    started = time.perf_counter()
    theirs = metaclip_balance(as_lists, probability)
    their_seconds = time.perf_counter() - started

    our_rate, their_rate = args.candidates / our_seconds, args.candidates / their_seconds
    print(f"{args.candidates:,} candidates, {int((matched > CAP).sum()):,} queries above the cap {CAP:,}")
    print(f"MetaCLIP loop : {their_rate:14,.0f} candidates/s/core, kept {theirs:,}")
    print(f"wit balanced  : {our_rate:14,.0f} candidates/s/core, kept {ours:,}")
    print(f"ratio {our_rate / their_rate:.2f}x; kept counts differ by {abs(ours - theirs) / theirs:.2%}")
    print(json.dumps({"bench": "balance", "metric": "candidates/s/core", "candidates": args.candidates,
                      "baseline": round(their_rate), "wit": round(our_rate),
                      "ratio": round(our_rate / their_rate, 3), "kept": ours, "baseline_kept": theirs}))


if __name__ == "__main__":
    main()
