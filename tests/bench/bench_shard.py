"""Benchmark: `wit shard` throughput against a plain copy of the same bytes on the same disk.

A synthetic crawl output (img2dataset-format tars of distinct ~90 KB JPEGs, a few
duplicate urls) is sharded by `wit shard` (index, de-duplicate, balance, write the
shards, the data card and its plot; all cores); the baseline copies the same input
tars with `shutil.copyfile`; both end with `os.sync()`. Each runs on the whole crawl
(3N samples) and on its first third (N samples, the same tars hard-linked), and the
throughput is the difference of bytes over the difference of times: the rate at which
more data is processed, with start-up (process pool, imports, the plot) cancelled out,
as in bench_train.py. Target >= 0.5x of the copy. The whole-command ratio on the 3N
crawl is printed too. Best of `--repeat`, alternating, in one run.

`wit shard` also runs on one worker, to show how its rate grows with cores (the copy
is one stream).

    python tests/bench/bench_shard.py [--samples 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wit.formats.uids import url_uid
from wit.shards.build import ShardConfig, run as shard

TARGET = 0.5
PER_TAR, DISTINCT = 500, 200
SHARD_SAMPLES = 500  # output shards as large as the input tars: both phases balance over the workers


def photos(count: int) -> list[bytes]:
    """`count` different 320x240 JPEGs (quality 95, ~90 KB each)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.roll(base, i, axis=1)).save(buffer, "JPEG", quality=95)
        out.append(buffer.getvalue())
    return out


def unique(jpeg: bytes, i: int) -> bytes:
    """The JPEG with a comment segment naming sample i: different bytes, same picture."""
    comment = f"sample {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def write_crawl(crawl: Path, samples: int) -> None:
    """img2dataset-style download/ with `samples` samples, PER_TAR to a tar, each finished
    (its `_stats.json` written, as img2dataset does when a shard is done)."""
    download = crawl / "download"
    download.mkdir(parents=True)
    (crawl / "crawl.json").write_text(json.dumps({"tool": "wit crawl", "queries": 1000}))
    pictures = photos(DISTINCT)
    for start in range(0, samples, PER_TAR):
        with tarfile.open(download / f"{start // PER_TAR:05d}.tar", "w") as tar:
            for i in range(start, min(start + PER_TAR, samples)):
                image = unique(pictures[i % DISTINCT], i)
                url = f"http://bench.example/{i % (samples - 10)}.jpg"  # 10 repeated urls
                meta = {"uid": url_uid(url), "url": url, "query_ids": [i % 1000], "width": 320, "height": 240,
                        "original_width": 320, "original_height": 240,
                        "sha256": hashlib.sha256(image).hexdigest()}
                for ext, data in (("jpg", image), ("txt", f"thing {i}".encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        done = min(start + PER_TAR, samples) - start
        (download / f"{start // PER_TAR:05d}_stats.json").write_text(json.dumps({"count": done, "successes": done}))


def first_part(crawl: Path, part: Path, tars: int) -> None:
    """A crawl dir holding the first `tars` tars of `crawl` (hard links: the same bytes)."""
    (part / "download").mkdir(parents=True)
    os.link(crawl / "crawl.json", part / "crawl.json")
    for path in sorted((crawl / "download").glob("*.tar"))[:tars]:
        os.link(path, part / "download" / path.name)
        os.link(path.with_name(f"{path.stem}_stats.json"), part / "download" / f"{path.stem}_stats.json")


def size_of(crawl: Path) -> int:
    return sum(p.stat().st_size for p in (crawl / "download").glob("*.tar"))


def copy_all(crawl: Path, target: Path) -> float:
    target.mkdir()
    started = time.perf_counter()
    for path in sorted((crawl / "download").glob("*.tar")):
        shutil.copyfile(path, target / path.name)
    os.sync()
    return time.perf_counter() - started


def shard_all(crawl: Path, out: Path, workers: int | None = None) -> float:
    started = time.perf_counter()
    shard(ShardConfig(crawl=str(crawl), out=str(out), samples_per_shard=SHARD_SAMPLES,
                      workers=workers or os.cpu_count() or 1))
    os.sync()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="N: the small crawl; the large one is 3N")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        work = Path(tmp)
        write_crawl(work / "large", 3 * args.samples)
        first_part(work / "large", work / "small", -(-args.samples // PER_TAR))
        mb = {name: size_of(work / name) / 1e6 for name in ("small", "large")}
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(args.repeat):
            for name in ("small", "large"):
                for tool, run in (("copy", copy_all), ("wit", shard_all),
                                  ("wit, 1 worker", lambda crawl, out: shard_all(crawl, out, workers=1))):
                    times.setdefault((tool, name), []).append(run(work / name, work / f"out-{name}-{i}"))
                    shutil.rmtree(work / f"out-{name}-{i}")
    best = {k: min(v) for k, v in times.items()}
    rate = {tool: (mb["large"] - mb["small"]) / (best[tool, "large"] - best[tool, "small"])
            for tool in ("copy", "wit", "wit, 1 worker")}
    ratio = rate["wit"] / rate["copy"]
    whole = best["copy", "large"] / best["wit", "large"]
    cores = os.cpu_count() or 1
    print(f"crawls of {args.samples:,} and {3 * args.samples:,} samples ({mb['small']:.0f} and {mb['large']:.0f} MB "
          f"of input tars), {cores} cores")
    print(f"plain copy  : {rate['copy']:8.1f} MB/s   (whole run on {mb['large']:.0f} MB: {best['copy', 'large']:.2f} s)")
    print(f"wit shard   : {rate['wit']:8.1f} MB/s   (whole run on {mb['large']:.0f} MB: {best['wit', 'large']:.2f} s)")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x); whole command on the large crawl {whole:.2f}x")
    print(f"wit shard on 1 worker: {rate['wit, 1 worker']:.1f} MB/s ({rate['wit'] / rate['wit, 1 worker']:.2f}x "
          f"faster on {cores}); the copy is one stream")
    print(json.dumps({"bench": "shard", "metric": "MB/s of input", "baseline": round(rate["copy"], 1),
                      "wit": round(rate["wit"], 1), "ratio": round(ratio, 3), "whole_command_ratio": round(whole, 3),
                      "wit_one_worker": round(rate["wit, 1 worker"], 1), "target": TARGET, "met": ratio >= TARGET}))


if __name__ == "__main__":
    sys.exit(main())
