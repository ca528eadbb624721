"""Scale run: `wit crawl --match-only --unit image` on synthetic pools of 10M and 50M rows.

Each pool holds candidate rows whose texts draw their words Zipf-distributed from the
vocabulary of 500,000 made-up queries (so query hits are Zipf-distributed too), with 10%
of the rows repeating the url of an earlier row (the same image on another page, the
case image-centric grouping is for). The whole crawl (matching, grouping by uid in
buckets, balancing) runs as a fresh process tree under GNU time: rows per second and
the peak RSS of the tree, which must stay flat from 10M to 50M rows (target: the 50M
peak within 25% of the 10M peak). There is no baseline: MetaCLIP has no pool-scale
grouping to compare with.

    python tests/bench/bench_scale.py [--rows 10000000 50000000] [--processes N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.bench.bench_match import make_queries  # noqa: E402

FILE_ROWS = 2_000_000
WORDS_PER_TEXT = 8
REPEATED = 0.10
FLAT = 1.25


def write_pool(directory: Path, rows: int, words: list[str], rng: np.random.Generator) -> None:
    """Parquet files of `rows` (url, text) rows, built column-wise by Arrow."""
    vocabulary = pa.array(words)
    for start in range(0, rows, FILE_ROWS):
        n = min(FILE_ROWS, rows - start)
        ids = np.arange(start, start + n)
        repeat = rng.random(n) < REPEATED
        ids[repeat] = rng.integers(0, max(start + 1, 1), repeat.sum())   # an earlier row's image
        url = pc.binary_join_element_wise("http://img", pc.cast(pa.array(ids % 997), pa.string()),
                                          ".example/", pc.cast(pa.array(ids), pa.string()), ".jpg", "")
        ranks = np.minimum(rng.zipf(1.3, size=(n, WORDS_PER_TEXT)), len(words)) - 1
        columns = [vocabulary.take(pa.array(ranks[:, j])) for j in range(WORDS_PER_TEXT)]
        text = pc.binary_join_element_wise(*columns, " ")
        pq.write_table(pa.table({"url": url, "text": text}), directory / f"pool-{start // FILE_ROWS:05d}.parquet",
                       row_group_size=500_000)


def crawl(rows: int, queries: str, work: Path, words: list[str], processes: int) -> dict:
    pool = work / f"pool-{rows}"
    pool.mkdir()
    started = time.perf_counter()
    write_pool(pool, rows, words, np.random.default_rng(rows))
    generated = time.perf_counter() - started
    out = work / f"crawl-{rows}"
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, "-m", "wit", "crawl", "--queries", queries,
         "--candidates", str(pool / "*.parquet"), "--out", str(out), "--match-only", "--unit", "image",
         "--processes", str(processes)],
        capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"wit crawl failed on {rows:,} rows:\n{done.stderr[-2000:]}")
    peak_kb = int(next(line for line in done.stderr.splitlines() if line.startswith("PEAK_KB")).split()[1])
    counts = json.loads((out / "crawl.json").read_text())["counts"]
    for path in (pool, out):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
            "peak_rss_mb": round(peak_kb / 1024), "matched": counts["matched"], "images": counts["images"],
            "selected": counts["selected"], "buckets": counts["buckets"], "generate_seconds": round(generated, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    queries, words = make_queries(500_000, np.random.default_rng(0))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        queries_file = work / "queries.txt"
        queries_file.write_text("\n".join(queries) + "\n")
        runs = []
        for rows in args.rows:
            runs.append(crawl(rows, str(queries_file), work, words, args.processes))
            r = runs[-1]
            print(f"{rows:,} rows: {r['seconds']} s ({r['rows_per_s']:,} rows/s on {args.processes} processes), "
                  f"peak RSS {r['peak_rss_mb']} MB; {r['matched']:,} matched, {r['images']:,} images in "
                  f"{r['buckets']} buckets, {r['selected']:,} selected")
    growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    print(f"peak RSS grows {growth:.2f}x from {args.rows[0]:,} to {args.rows[-1]:,} rows (target <= {FLAT}x)")
    print(json.dumps({"bench": "scale", "metric": f"rows/s ({args.processes} processes)", "baseline": None,
                      "wit": runs[-1]["rows_per_s"], "ratio": None,
                      "target_text": f"peak RSS at {args.rows[-1]:,} rows ≤ {FLAT}x of {args.rows[0]:,}",
                      "rows_per_s_per_process": round(runs[-1]["rows_per_s"] / args.processes),
                      "peak_rss_mb": {str(r["rows"]): r["peak_rss_mb"] for r in runs},
                      "peak_growth": round(growth, 3), "met": growth <= FLAT}))


if __name__ == "__main__":
    main()
