"""Benchmark: `wit filter --semantic-dedup` at 1M image vectors (512-d, as ViT-B-32's).

Both sides get the same clusters: faiss spherical k-means (one cluster per 10,000 vectors,
wit's default) and each vector's nearest centroid. Then, per cluster:
- baseline: SemDeDup's reference step, the full similarity matrix of the cluster's members
  (ordered furthest from the centroid first), its upper triangle, each column's maximum;
- wit: `wit.filter.semdedup.duplicates`, the members before each row compared a block of
  rows at a time.
Each side runs in a process of its own (time, and its working memory: the peak RSS, sampled
every 20 ms, above the loaded vectors);
the vectors removed must be the same. The vectors: 100 topics, each vector a noisy copy
of a random base near its topic, a third of them with 1-3 near-copies.

    python tests/bench/bench_semdedup.py [--vectors 1000000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPS = 0.05


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    from wit.filter.semdedup import normalised

    rng = np.random.default_rng(seed)
    topics = normalised(rng.standard_normal((100, dim), np.float32))
    bases = n * 2 // 3
    x = np.empty((n, dim), np.float32)
    for start in range(0, bases, 100_000):   # in blocks: no n x dim float64 temporaries
        stop = min(start + 100_000, bases)
        noise = rng.standard_normal((stop - start, dim), np.float32)
        x[start:stop] = normalised(topics[rng.integers(0, 100, stop - start)] + 1.5 * noise / np.sqrt(dim))
    copies = rng.integers(0, bases, n - bases)
    for start in range(0, len(copies), 100_000):
        chunk = copies[start:start + 100_000]
        noise = rng.standard_normal((len(chunk), dim), np.float32)
        x[bases + start:bases + start + len(chunk)] = normalised(x[chunk] + 0.1 * noise / np.sqrt(dim))
    return x[rng.permutation(n)]


def reference(x: np.ndarray, cluster: np.ndarray, distance: np.ndarray, eps: float) -> np.ndarray:
    """SemDeDup's per-cluster step as its reference code does it: the whole matrix."""
    from wit.filter.semdedup import cluster_order

    order = cluster_order(cluster, distance)
    bounds = np.flatnonzero(np.diff(cluster[order])) + 1
    removed = []
    for members in np.split(order, bounds):
        m = x[members]
        similarity = m @ m.T
        similarity = np.triu(similarity, k=1)
        similarity[np.tril_indices(len(members))] = -np.inf
        removed.append(members[similarity.max(axis=0) > 1 - eps])
    return np.sort(np.concatenate(removed))


def child(side: str, data: str, clusters: str) -> None:
    """One side, in a process of its own: prints seconds, peak RSS above the loaded inputs, removed rows' sha."""
    import hashlib

    from wit.filter.semdedup import duplicates

    x = np.load(data)
    saved = np.load(clusters)
    cluster, distance = saved["cluster"], saved["distance"]
    import threading

    import psutil

    process = psutil.Process()
    loaded, peak = process.memory_info().rss / 2**20, [0.0]

    def sample() -> None:   # RSS every 20 ms (ru_maxrss would also count the loading's transients)
        while True:
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    if side == "wit":
        removed = np.sort(np.array([row for row, _, _ in duplicates(x, cluster, distance, EPS)], np.int64))
    else:
        removed = reference(x, cluster, distance, EPS)
    seconds = time.perf_counter() - started
    time.sleep(0.05)
    print(json.dumps({"seconds": seconds, "working_mb": max(peak[0] - loaded, 0), "removed": len(removed),
                      "sha": hashlib.sha256(removed.astype(np.int64).tobytes()).hexdigest()}))


def run_side(side: str, data: Path, clusters: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", side, str(data), str(clusters)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "DATA", "CLUSTERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from wit.filter.semdedup import PER_CLUSTER, assign, kmeans

    x = vectors(args.vectors, args.dim)
    k = max(1, round(len(x) / PER_CLUSTER))
    started = time.perf_counter()
    cluster, distance = assign(x, kmeans(x, k, seed=0))
    distance = np.round(distance.astype(np.float64), 6)
    clustering = time.perf_counter() - started
    sizes = np.bincount(cluster)
    with tempfile.TemporaryDirectory() as tmp:
        data, clusters = Path(tmp) / "x.npy", Path(tmp) / "clusters.npz"
        np.save(data, x)
        np.savez(clusters, cluster=cluster, distance=distance)
        del x
        base = run_side("baseline", data, clusters)
        wit = run_side("wit", data, clusters)
    same = base["sha"] == wit["sha"]
    ratio = base["seconds"] / wit["seconds"]
    print(f"{args.vectors:,} vectors of {args.dim} dims, {k} clusters (largest {sizes.max():,}), k-means and "
          f"assignment {clustering:.1f} s (both sides)")
    print(f"within clusters, EPS {EPS}: baseline (whole similarity matrix per cluster) {base['seconds']:.1f} s, "
          f"{base['working_mb']:,.0f} MB above the vectors; wit (blocked) {wit['seconds']:.1f} s, "
          f"{wit['working_mb']:,.0f} MB; {ratio:.2f}x; {wit['removed']:,} removed, same as the baseline: {same}")
    print(json.dumps({"bench": "semdedup", "metric": "SemDeDup within-cluster step at 1M vectors, vectors/s",
                      "vectors": args.vectors, "clusters": k, "largest_cluster": int(sizes.max()),
                      "baseline": round(args.vectors / base["seconds"]), "wit": round(args.vectors / wit["seconds"]),
                      "ratio": round(ratio, 3), "target_text": "≥ 1x, same removals, less memory",
                      "met": ratio >= 1 and same and wit["working_mb"] < base["working_mb"],
                      "kmeans_seconds": round(clustering, 1), "removed": wit["removed"], "identical": same,
                      "working_mb": round(wit["working_mb"]), "baseline_working_mb": round(base["working_mb"])}))


if __name__ == "__main__":
    main()
