"""The SHARDS dir: `NNNNNN.tar` WebDataset shards, `sizes.json` (OpenCLIP reads it),
`manifest.json` (every shard's samples, bytes and sha256) and `datacard.json`."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
from typing import BinaryIO

from wit.formats.atomic import read_json_object, write_json
from wit.formats.errors import WitError

SIZES, MANIFEST, DATACARD = "sizes.json", "manifest.json", "datacard.json"
MAX_TEXTS = 16   # texts in a sample's json (`texts`, image-centric crawls): the drawn one first
SAMPLE_JSON_FIELDS = ("uid", "url", "query_ids", "width", "height", "original_width", "original_height",
                      "sha256")
MANIFEST_SHARD_FIELDS = {"name": str, "samples": int, "bytes": int, "sha256": str}
MANIFEST_FIELDS = {"shards": list, "total_samples": int, "total_bytes": int, "cap": int, "counts": dict}


def shard_name(index: int) -> str:
    return f"{index:06d}.tar"


def is_plain_name(name: str) -> bool:
    """A file name without a path, so a listing cannot point a reader elsewhere."""
    return name == posixpath.basename(name) and name not in ("", ".", "..")


def write_sizes(directory: str, sizes: dict[str, int]) -> None:
    write_json(os.path.join(directory, SIZES), sizes)


def read_manifest(directory: str) -> dict:
    """manifest.json of a SHARDS dir, checked field by field; shard names are plain file
    names (no path), so a manifest cannot point a reader elsewhere."""
    path = os.path.join(directory, MANIFEST)
    manifest = read_json_object(path, "shard manifest (not a finished `wit shard` output?)")
    for name, kind in MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(name), kind) or isinstance(manifest.get(name), bool):
            raise WitError(f"{path}: field {name!r} missing or not a {kind.__name__}")
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise WitError(f"{path}: shards[{i}] is not an object")
        for name, kind in MANIFEST_SHARD_FIELDS.items():
            if not isinstance(shard.get(name), kind) or isinstance(shard.get(name), bool):
                raise WitError(f"{path}: shards[{i}].{name} missing or not a {kind.__name__}")
        if not is_plain_name(shard["name"]):
            raise WitError(f"{path}: shards[{i}].name {shard['name']!r} is not a plain file name")
    return manifest


def read_sizes(path: str, spec: str) -> dict[str, int]:
    """{tar name: samples} from sizes.json (local or fsspec), else from manifest.json beside it."""
    import fsspec

    manifest = posixpath.join(posixpath.dirname(path), MANIFEST)
    for candidate in (path, manifest):
        try:
            with fsspec.open(candidate, "rt") as f:
                data = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise WitError(f"{candidate}: cannot read the shard sizes ({e})") from None
        if candidate == manifest:
            shards = data.get("shards", []) if isinstance(data, dict) else None
            if not isinstance(shards, list) or not all(isinstance(s, dict) and "name" in s for s in shards):
                raise WitError(f"{candidate}: expected {{\"shards\": [{{\"name\": ..., \"samples\": ...}}]}}")
            data = {s["name"]: s.get("samples") for s in shards}
        if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in data.values()):
            raise WitError(f"{candidate}: expected {{\"NNNNNN.tar\": samples, ...}}")
        if not data:
            raise WitError(f"{candidate}: lists no shards")
        bad = next((name for name in data if not is_plain_name(name)), None)
        if bad is not None:
            raise WitError(f"{candidate}: {bad!r} is not a plain shard file name")
        return data
    raise WitError(f"{spec}: no sizes.json or manifest.json found ({path}); the epoch size is never guessed")


# ---- a shard file against its manifest entry -------------------------------------------


def open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file (not a link to one); a WitError
    otherwise. Opening does not block: a FIFO opens at once and is then refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WitError(f"{path}: missing (the manifest lists it)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise WitError(f"{path}: a symbolic link, not a regular file (only regular files are read)") from None
        raise WitError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise WitError(f"{path}: {_kind(mode)}, not a regular file (only regular files are read)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def verify_shard(f: BinaryIO, path: str, entry: dict) -> list[str]:
    """How the shard file `f` (opened from `path`, at its start) differs from its manifest
    entry (its size, its sha256); [] when it matches. A file that cannot be read is a
    WitError."""
    problems = []
    size = os.fstat(f.fileno()).st_size
    if size != entry["bytes"]:
        problems.append(f"{path}: {size:,} bytes, the manifest says {entry['bytes']:,}")
    try:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise WitError(f"{path}: unreadable ({e.strerror or e})") from None
    if digest != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from the manifest")
    return problems
