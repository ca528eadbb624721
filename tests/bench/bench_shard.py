"""Benchmark: `wit shard` throughput against a plain copy of the same bytes on the same disk.

A synthetic crawl output (img2dataset-format tars of distinct JPEGs, ~60 KB each, a
few duplicates) is sharded by `wit shard` (index, de-duplicate, balance, write; all
cores); the baseline copies the same input tars with `shutil.copyfile`. The figure is MB
of input per second; target >= 0.5x of the copy. Best of `--repeat`, in one run.

    python tests/bench/bench_shard.py [--samples 3000] [--repeat 2]
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

from wit.crawl.urls import url_uid
from wit.shards.build import ShardConfig, shard

TARGET = 0.5


def write_crawl(crawl: Path, samples: int, per_tar: int = 500) -> int:
    """img2dataset-style download/ with `samples` samples; returns its bytes."""
    download = crawl / "download"
    download.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    for start in range(0, samples, per_tar):
        with tarfile.open(download / f"{start // per_tar:05d}.tar", "w") as tar:
            for i in range(start, min(start + per_tar, samples)):
                pixels = np.roll(base, i % 320, axis=1)
                pixels[0, :4, 0] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)  # unique images
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
                image = buffer.getvalue()
                url = f"http://bench.example/{i % (samples - 10)}.jpg"  # 10 repeated urls
                meta = {"uid": url_uid(url), "url": url, "query_ids": [i % 1000], "width": 320, "height": 240,
                        "original_width": 320, "original_height": 240,
                        "sha256": hashlib.sha256(image).hexdigest()}
                for ext, data in (("jpg", image), ("txt", f"thing {i}".encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return sum(p.stat().st_size for p in download.glob("*.tar"))


def copy_all(source: Path, target: Path) -> float:
    target.mkdir()
    started = time.perf_counter()
    for path in sorted(source.glob("*.tar")):
        shutil.copyfile(path, target / path.name)
    os.sync()
    return time.perf_counter() - started


def shard_all(crawl: Path, out: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    manifest = shard(ShardConfig(crawl=str(crawl), out=str(out), samples_per_shard=1000))
    os.sync()
    return time.perf_counter() - started, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        work = Path(tmp)
        size = write_crawl(work / "crawl", args.samples)
        copies, shards = [], []
        for i in range(args.repeat):
            copies.append(copy_all(work / "crawl" / "download", work / f"copy{i}"))
            seconds, manifest = shard_all(work / "crawl", work / f"shards{i}")
            shards.append(seconds)
    mb = size / 1e6
    copy_rate, shard_rate = mb / min(copies), mb / min(shards)
    ratio = shard_rate / copy_rate
    print(f"{args.samples:,} samples, {mb:.0f} MB of input tars; {manifest['total_samples']:,} samples written, "
          f"{manifest['counts']['duplicates_by_uid']} duplicates removed; {os.cpu_count()} cores")
    print(f"plain copy  : {copy_rate:8.1f} MB/s")
    print(f"wit shard   : {shard_rate:8.1f} MB/s")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x)")
    print(json.dumps({"bench": "shard", "metric": "MB/s of input", "baseline": round(copy_rate, 1),
                      "wit": round(shard_rate, 1), "ratio": round(ratio, 3), "target": TARGET,
                      "met": ratio >= TARGET}))


if __name__ == "__main__":
    sys.exit(main())
