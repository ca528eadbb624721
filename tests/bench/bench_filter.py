"""Benchmark: `wit filter`'s near-duplicate and decontamination detector (one core).

1. Hashing, images/s/core: wit's pHash (JPEG decoded at reduced scale) against
   imagehash's own `phash(Image.open(...))` on the same 256x192 photo-like JPEGs.
2. Search at 1M hashes: random 64-bit hashes with planted near copies (every 100th,
   1-8 bits flipped). wit's multi-index hashing (`HashIndex`, exact at the radius)
   against faiss's brute-force `IndexBinaryFlat` range search, the baseline timed on a
   subset of the queries and extrapolated to all of them; queries/s, pairs found on the
   subset compared, peak RSS.

    python tests/bench/bench_filter.py [--hashes 1000000]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time

import numpy as np

from tests.support.images import photo
from wit.filter.hashes import phash
from wit.filter.neardup import HashIndex, first_kept

RADIUS = 8


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hashing(images: list[bytes]) -> tuple[float, float]:
    import imagehash
    from PIL import Image

    started = time.perf_counter()
    for image in images:
        imagehash.phash(Image.open(io.BytesIO(image)))
    baseline = len(images) / (time.perf_counter() - started)
    started = time.perf_counter()
    for image in images:
        phash(image)
    return baseline, len(images) / (time.perf_counter() - started)


def codes(n: int, rng: np.random.Generator) -> np.ndarray:
    data = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    bits = np.unpackbits(data[::100], axis=1)
    for row, flips in zip(bits, rng.integers(1, RADIUS + 1, len(bits))):
        row[rng.choice(64, flips, replace=False)] ^= 1
    data[50::100][:len(bits)] = np.packbits(bits, axis=1)[:len(data[50::100])]
    return data


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--baseline-queries", type=int, default=2_000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    images = [photo(i) for i in range(args.images)]
    hash_base, hash_wit = hashing(images)
    before = rss_mb()

    data = codes(args.hashes, np.random.default_rng(0))
    started = time.perf_counter()
    by, _ = first_kept(data, RADIUS)
    wit_seconds = time.perf_counter() - started
    wit_rate = args.hashes / wit_seconds
    peak = rss_mb()

    subset = data[:args.baseline_queries]
    flat = faiss.IndexBinaryFlat(64)
    flat.add(data)
    started = time.perf_counter()
    lims, _, labels = flat.range_search(subset, RADIUS + 1)
    base_rate = len(subset) / (time.perf_counter() - started)
    rows, found, _ = HashIndex(data, RADIUS).search(subset)
    same = set(zip(np.repeat(np.arange(len(subset)), np.diff(lims).astype(np.int64)).tolist(), labels.tolist())) \
        == set(zip(rows.tolist(), found.tolist()))

    planted = len(data[50::100])
    print(f"hashing, {args.images} 256x192 JPEGs: imagehash {hash_base:,.0f} images/s/core, "
          f"wit {hash_wit:,.0f} images/s/core ({hash_wit / hash_base:.2f}x)")
    print(f"search at {args.hashes:,} hashes, radius {RADIUS}: brute force (IndexBinaryFlat, {len(subset):,} queries, "
          f"extrapolated) {base_rate:,.0f} queries/s/core = {args.hashes / base_rate:,.0f} s for all; "
          f"wit (multi-index hashing, all queries, groups included) {wit_rate:,.0f} queries/s/core = "
          f"{wit_seconds:.1f} s")
    print(f"removed {int((by >= 0).sum()):,} of {planted:,} planted copies; same pairs as brute force: {same}")
    print(f"peak RSS {peak:,.0f} MB ({peak - before:,.0f} MB above the start of the search, "
          f"{(peak - before) * 1e6 / args.hashes:,.0f} MB per million hashes)")
    print(json.dumps({"bench": "filter", "metric": "near-dup queries/s/core at 1M hashes", "hashes": args.hashes,
                      "baseline": round(base_rate), "wit": round(wit_rate), "ratio": round(wit_rate / base_rate, 3),
                      "target_text": "> 1x, same pairs", "met": wit_rate > base_rate and same,
                      "hashing_baseline": round(hash_base), "hashing_wit": round(hash_wit),
                      "hashing_ratio": round(hash_wit / hash_base, 3), "exact": same,
                      "peak_rss_mb": round(peak), "search_mb_per_million": round((peak - before) * 1e6 / args.hashes)}))


if __name__ == "__main__":
    main()
