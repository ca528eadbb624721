"""Reading and writing WebDataset tars safely and deterministically.

Reading refuses members with absolute paths, `..`, links, devices or other non-regular
files, and stops at the first unreadable header, at a member that runs past the end of
the file or at a missing end-of-archive marker, keeping the samples read before it. Writing produces byte-identical tars for the same samples:
members in a fixed order, mtime 0, owner root, mode 0644, no user or group names.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

IMAGE_EXTENSIONS = ("jpg", "jpeg", "webp", "png")


@dataclass
class Member:
    """Where one member's bytes lie in its tar."""

    name: str
    offset: int
    size: int


@dataclass
class TarScan:
    """What reading one tar found: samples (members by extension, per key) and problems."""

    samples: dict[str, dict[str, Member]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> members
    error: str | None = None  # why reading stopped early, if it did


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be read, or None."""
    if not member.isreg():
        return "link" if member.issym() or member.islnk() else "not_a_file"
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        return "absolute_path"
    if ".." in name.split("/") or "\\" in name:
        return "path_traversal"
    return None


def scan_tar(path: str) -> TarScan:
    """Index the samples of a WebDataset tar without loading their bytes."""
    scan = TarScan()
    try:
        size = os.path.getsize(path)
        with tarfile.open(path, "r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    if size < tar.offset + 2 * tarfile.BLOCKSIZE:
                        scan.error = "truncated: no end-of-archive marker"
                    break
                if member.offset_data + member.size > size:
                    scan.error = f"truncated: {member.name} runs past the end of the file"
                    break
                reason = unsafe_reason(member)
                if reason:
                    if not member.isdir():
                        scan.refused[reason] = scan.refused.get(reason, 0) + 1
                    continue
                key, _, extension = posixpath.basename(member.name).partition(".")
                scan.samples.setdefault(key, {})[extension.lower()] = Member(
                    member.name, member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as e:
        scan.error = str(e) or type(e).__name__
    return scan


def read_member(f: BinaryIO, member: Member) -> bytes:
    f.seek(member.offset)
    data = f.read(member.size)
    if len(data) != member.size:
        raise EOFError(f"{member.name}: truncated")
    return data


def write_tar(out: BinaryIO, samples: Iterator[tuple[str, list[tuple[str, bytes]]]]) -> None:
    """Write (key, [(extension, bytes), ...]) samples as a deterministic tar."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, parts in samples:
            for extension, data in parts:
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
