"""Benchmark: `wit crawl` downloads against bare `img2dataset.download`, same web, same settings.

A local test web (server processes on 127.0.0.1 to 127.0.0.HOSTS, a pool spread over
hosts as a crawl's is) serves N distinct JPEGs. img2dataset downloads them from a
url/caption parquet; `wit crawl` matches the same pool (every caption matches a query),
balances it and downloads through img2dataset with every guard on: the connect-time
address check, the deadline, bounded reads, the header check, robots.txt and
`--max-per-host`. Each runs in a fresh process, alternating, best of `--repeat`. The
figure is downloaded images per second of the download step (wit's from crawl.json);
target >= 0.95x. Also reported: the ratio with robots.txt off, and the whole command.

    python tests/bench/bench_download.py [--images 4000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench import bench_env  # noqa: E402
from tests.support.testweb import TestWeb  # noqa: E402

TARGET = 0.95
HOSTS = 8
SETTINGS = {"processes": 2, "threads": 16, "image_size": 256, "timeout": 10, "retries": 1,
            "samples_per_shard": 500}
BARE = """
import json, sys, time
import img2dataset
if __name__ == "__main__":
    pool, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    started = time.perf_counter()
    img2dataset.download(
        url_list=pool, input_format="parquet", url_col="url", caption_col="text",
        output_folder=out, output_format="webdataset", image_size=settings["image_size"],
        resize_mode="keep_ratio", resize_only_if_bigger=True, encode_quality=95,
        processes_count=settings["processes"], thread_count=settings["threads"],
        timeout=settings["timeout"], retries=settings["retries"],
        number_sample_per_shard=settings["samples_per_shard"], distributor="multiprocessing",
        enable_wandb=False)
    print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def run_bare(pool: Path, out: Path, script: Path) -> dict:
    done = subprocess.run([sys.executable, str(script), str(pool.parent), str(out), json.dumps(SETTINGS)],
                          capture_output=True, text=True, check=True, env=bench_env())
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    successes = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    return {"download_seconds": seconds, "command_seconds": seconds, "successes": successes}


def run_wit(pool: Path, queries: Path, out: Path, *extra: str) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wit", "crawl", "--queries", str(queries), "--out", str(out),
                    "--candidates", str(pool), "--allow-network", "127.0.0.0/8", *extra,
                    "--processes", str(SETTINGS["processes"]), "--threads", str(SETTINGS["threads"]),
                    "--timeout", str(SETTINGS["timeout"]), "--retries", str(SETTINGS["retries"]),
                    "--samples-per-shard", str(SETTINGS["samples_per_shard"])],
                   capture_output=True, text=True, check=True, env=bench_env())
    command = time.perf_counter() - started
    summary = json.loads((out / "crawl.json").read_text())
    return {"download_seconds": summary["seconds"]["download"], "command_seconds": command,
            "successes": summary["counts"]["downloaded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # a pool spread over HOSTS hosts, as a crawl's is, so that --max-per-host bounds each
        webs = [stack.enter_context(TestWeb(f"127.0.0.{h + 1}")) for h in range(HOSTS)]
        work = Path(tmp)
        (work / "pool").mkdir()
        pool = work / "pool" / "pool.parquet"
        pq.write_table(pa.table({
            "url": [webs[i % HOSTS].url(f"/img/bench{i}.jpg?w=400&h=300") for i in range(args.images)],
            "text": [f"a photo of thing number {i}" for i in range(args.images)],
        }), pool)
        (work / "queries").mkdir()
        pq.write_table(pa.table({"query_id": pa.array([0], pa.int32()), "query": ["photo"]}),
                       work / "queries" / "queries.parquet")
        script = work / "bare.py"
        script.write_text(BARE)
        bare_runs, wit_runs, no_robots_runs = [], [], []
        for i in range(args.repeat):
            bare_runs.append(run_bare(pool, work / f"bare{i}", script))
            wit_runs.append(run_wit(pool, work / "queries", work / f"wit{i}"))
            no_robots_runs.append(run_wit(pool, work / "queries", work / f"norobots{i}", "--no-respect-robots"))
    bare = min(bare_runs, key=lambda r: r["download_seconds"])
    ours = min(wit_runs, key=lambda r: r["download_seconds"])
    no_robots = min(no_robots_runs, key=lambda r: r["download_seconds"])
    rate = lambda r, key: r["successes"] / r[key]  # noqa: E731
    ratio = rate(ours, "download_seconds") / rate(bare, "download_seconds")
    ratio_no_robots = rate(no_robots, "download_seconds") / rate(bare, "download_seconds")
    command_ratio = rate(ours, "command_seconds") / rate(bare, "command_seconds")
    print(f"{args.images:,} images from a local web; settings {SETTINGS}")
    print(f"img2dataset.download : {rate(bare, 'download_seconds'):8.1f} images/s ({bare['successes']:,} ok)")
    print(f"wit crawl, download  : {rate(ours, 'download_seconds'):8.1f} images/s ({ours['successes']:,} ok)")
    print(f"wit crawl, whole command (match, select, download): {rate(ours, 'command_seconds'):8.1f} images/s")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x), every guard on; robots.txt off {ratio_no_robots:.2f}x; "
          f"whole command {command_ratio:.2f}x")
    print(json.dumps({"bench": "download", "metric": "images/s", "images": args.images,
                      "baseline": round(rate(bare, "download_seconds"), 1),
                      "wit": round(rate(ours, "download_seconds"), 1), "ratio": round(ratio, 3),
                      "whole_command_ratio": round(command_ratio, 3), "robots_off_ratio": round(ratio_no_robots, 3),
                      "hosts": HOSTS, "target": TARGET,
                      "met": ratio >= TARGET and ours["successes"] == bare["successes"] == args.images}))


if __name__ == "__main__":
    main()
