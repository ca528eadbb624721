"""Finding the shards of a SHARDS dir (or a brace pattern) with their sample counts, and
reading samples from a tar stream safely.

Sample counts come from `sizes.json` (or `manifest.json`) next to the shards, never from
guessing. Readers refuse members with absolute paths, `..`, links or device files."""

from __future__ import annotations

import glob
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator

import braceexpand
import fsspec
import webdataset as wds

from train.errors import TrainError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "webp", "png")


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int


@dataclass
class Sample:
    key: str
    image: bytes | None
    text: str | None
    meta: bytes | None


def list_shards(spec: str, sizes: str | None = None) -> list[Shard]:
    """The shards named by `spec` (a SHARDS dir, a brace or glob pattern of local paths or
    fsspec urls, or `pipe:` commands) with their sample counts from `sizes` or the
    sizes.json next to them."""
    if "://" not in spec and not spec.startswith("pipe:") and os.path.isdir(spec):
        counts = _read_sizes(sizes or os.path.join(spec, "sizes.json"), spec)
        return [Shard(os.path.join(spec, name), n) for name, n in sorted(counts.items())]
    urls = list(braceexpand.braceexpand(spec))
    if not spec.startswith("pipe:") and any(c in spec for c in "*?["):
        urls = sorted({match for pattern in urls for match in _glob(pattern)})
        if not urls:
            raise TrainError(f"{spec}: no shard matches")
    if sizes is None:
        if urls[0].startswith("pipe:"):
            raise TrainError(f"{spec}: pipe: urls need the sizes file; set sizes=PATH/TO/sizes.json")
        sizes = posixpath.join(posixpath.dirname(urls[0]) if "://" in urls[0] else os.path.dirname(urls[0]),
                               "sizes.json")
    counts = _read_sizes(sizes, spec)
    shards = []
    for url in urls:
        name = _tar_name(url)
        if name not in counts:
            raise TrainError(f"{url}: not listed in {sizes}")
        shards.append(Shard(url, counts[name]))
    return shards


def _glob(pattern: str) -> list[str]:
    """The files a glob pattern names, local or fsspec (as urls of the same protocol)."""
    if "://" not in pattern:
        return glob.glob(pattern)
    fs, path = fsspec.core.url_to_fs(pattern)
    return [fs.unstrip_protocol(p) for p in fs.glob(path)]


def _tar_name(url: str) -> str:
    """The shard's name in sizes.json: the basename of the url, or of the `.tar` argument
    of a `pipe:` command."""
    tars = [w for w in url.split() if w.endswith(".tar")] if url.startswith("pipe:") else [url]
    return posixpath.basename(tars[-1] if tars else url)


def _read_sizes(path: str, spec: str) -> dict[str, int]:
    """{tar name: samples} from sizes.json, else from manifest.json beside it."""
    manifest = posixpath.join(posixpath.dirname(path), "manifest.json")
    for candidate in (path, manifest):
        try:
            with fsspec.open(candidate, "rt") as f:
                data = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise TrainError(f"{candidate}: cannot read the shard sizes ({e})") from None
        if candidate == manifest:
            data = {s["name"]: s["samples"] for s in data.get("shards", [])}
        if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
            raise TrainError(f"{candidate}: expected {{\"NNNNNN.tar\": samples, ...}}")
        if not data:
            raise TrainError(f"{candidate}: lists no shards")
        return data
    raise TrainError(f"{spec}: no sizes.json or manifest.json found ({path}); the epoch size is never guessed")


def open_url(url: str):
    """A binary stream for a local path, a `pipe:` command or any fsspec url."""
    if url.startswith("pipe:") or url.startswith(("http://", "https://")):
        return wds.gopen(url, "rb")
    if "://" in url:
        return fsspec.open(url, "rb").open()
    return open(url, "rb", buffering=1 << 20)


def safe_member(info: tarfile.TarInfo) -> bool:
    """A regular file with a relative name that stays inside the archive."""
    name = info.name
    return (info.isreg() and not name.startswith("/") and ".." not in name.split("/")
            and "\\" not in name)


def read_samples(url: str, skip: int = 0, stats: dict | None = None) -> Iterator[Sample]:
    """The samples of one tar, in order, from sample number `skip` on (the data of skipped
    samples is not read). Refused members are counted in `stats["unsafe_members"]`; a truncated tar
    ends the iteration (counted in `stats["truncated_shards"]`)."""
    stats = stats if stats is not None else {}
    try:
        stream = open_url(url)
    except FileNotFoundError:
        raise TrainError(f"{url}: shard listed in sizes.json is missing") from None
    index, key, current = -1, None, None
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not safe_member(info):
                    stats["unsafe_members"] = stats.get("unsafe_members", 0) + 1
                    continue
                base = info.name.rsplit("/", 1)[-1]
                if "." not in base:
                    continue
                prefix = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
                ext = base.split(".", 1)[1].lower()
                if prefix != key:
                    if current is not None:
                        yield current
                    index, key = index + 1, prefix
                    current = Sample(prefix, None, None, None) if index >= skip else None
                if current is None:
                    continue
                if ext in IMAGE_EXTENSIONS and current.image is None:
                    current.image = tar.extractfile(info).read()
                elif ext == "txt":
                    current.text = tar.extractfile(info).read().decode("utf-8", "replace")
                elif ext == "json":
                    current.meta = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError):
        stats["truncated_shards"] = stats.get("truncated_shards", 0) + 1
        return
    if current is not None:
        yield current
