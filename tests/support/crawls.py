"""Crawls for the tests: the test query list, candidate pools, `wit crawl` arguments, crawl
outputs written directly in img2dataset's layout (for `wit shard` and what follows), and
the samples of a crawl read back. The test web and query list fixtures (`web`,
`queries_dir`) are in tests/conftest.py."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.images import noise_jpeg
from tests.support.witcli import run_wit
from wit.formats.uids import url_uid

QUERIES = ["dog", "cat", "red dog", "bird"]

# Urls whose host a client would decode to another one (percent-encoded, full-width digits,
# ideographic dots, a zone id): the policy refuses them as malformed, whatever is allowed.
DISGUISED = ["http://127.0.0.%31:8000/x.jpg", "http://%31%32%37.0.0.1/", "http://%6cocalhost/",
             "http://%31%36%39.254.169.254/latest/meta-data", "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
             "http://127\u30020\u30020\u30021/", "http://127\uff0e0\uff0e0\uff0e1/", "http://[fe80::1%25eth0]/",
             "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "http://ex%61mple.com/a.jpg"]


def write_queries(directory: Path) -> Path:
    """A QUERIES dir of QUERIES."""
    directory.mkdir()
    pq.write_table(pa.table({"query_id": pa.array(range(len(QUERIES)), pa.int32()), "query": QUERIES}),
                   directory / "queries.parquet")
    return directory


def write_pool(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A candidate pool: a parquet file of (url, text) rows."""
    pq.write_table(pa.table({"url": [u for u, _ in rows], "text": [t for _, t in rows]}), path)
    return path


wit_crawl = partial(run_wit, "crawl")


def crawl_args(queries_dir, pool, out, *extra):
    return ["--queries", queries_dir, "--out", out, "--candidates", pool, "--allow-private-hosts",
            "--processes", "1", "--threads", "2", "--samples-per-shard", "5", "--timeout", "5", *extra]


def samples(download: Path) -> list[dict]:
    """Every sample's json in the download's tars."""
    out = []
    for tar_path in sorted(download.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    out.append(json.load(tar.extractfile(member)))
    return out


# ---- crawl outputs written by the tests ----------------------------------------------


@dataclass
class Sample:
    url: str
    text: str
    query_ids: list[int]
    image: bytes
    original: tuple[int, int] = (64, 48)   # the size img2dataset's json gives as found on the web

    @property
    def uid(self) -> str:
        return url_uid(self.url)


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_download(crawl: Path, shards: list[list[Sample]], extra=None, queries: int = 3) -> Path:
    """img2dataset-style download/NNNNN.tar (+ _stats.json) for the given samples, and the
    crawl.json that says how many queries the crawl had."""
    download = crawl / "download"
    download.mkdir(parents=True, exist_ok=True)
    (crawl / "crawl.json").write_text(json.dumps({"tool": "wit crawl", "queries": queries}))
    for shard_id, samples in enumerate(shards):
        with tarfile.open(download / f"{shard_id:05d}.tar", "w") as tar:
            for i, s in enumerate(samples):
                key = f"{shard_id:05d}{i:04d}"
                meta = {"uid": s.uid, "query_ids": s.query_ids, "caption": s.text, "url": s.url, "key": key,
                        "status": "success", "width": 32, "height": 24, "original_width": s.original[0],
                        "original_height": s.original[1], "sha256": hashlib.sha256(s.image).hexdigest()}
                add(tar, f"{key}.jpg", s.image)
                add(tar, f"{key}.txt", s.text.encode())
                add(tar, f"{key}.json", json.dumps(meta).encode())
            if extra:
                extra(tar)
        (download / f"{shard_id:05d}_stats.json").write_text(json.dumps({"count": len(samples)}))
    return crawl


def pool() -> tuple[list[list[Sample]], dict]:
    """400 head samples (query 0), 20 and 10 tail samples (queries 1, 2), 5 repeated uids,
    4 repeated images under new urls."""
    head = [Sample(f"http://h.example/{i}.jpg", f"dog {i}", [0], noise_jpeg(i)) for i in range(400)]
    tail = [Sample(f"http://t.example/{i}.jpg", f"cat {i}", [1], noise_jpeg(1000 + i)) for i in range(20)]
    tail += [Sample(f"http://u.example/{i}.jpg", f"bird {i}", [2, 0] if i < 3 else [2], noise_jpeg(2000 + i))
             for i in range(10)]
    same_uid = [Sample(s.url, s.text + " again", s.query_ids, noise_jpeg(5000 + i))
                for i, s in enumerate(tail[:5])]
    same_image = [Sample(f"http://copy.example/{i}.jpg", "copy", [1], tail[10 + i].image) for i in range(4)]
    unique = head + tail
    return [head[:200], head[200:] + tail[:15], tail[15:] + same_uid + same_image], {
        "unique": unique, "dup_uid": 5, "dup_sha": 4}
