"""Reading and writing WebDataset tars safely and deterministically.

Reading refuses members with absolute paths, `..`, links, devices or other non-regular
files, and stops at the first unreadable header, at a member that runs past the end of
the file or at a missing end-of-archive marker, keeping the samples read before it.
Plain headers are read directly, everything else through tarfile, with one result.
Writing produces byte-identical tars for the same samples (the bytes tarfile writes):
members in a fixed order, mtime 0, owner root, mode 0644, no user or group names.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

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
    return _unsafe(member.type, member.name)


def _unsafe(kind: bytes, name: str) -> str | None:
    if kind not in tarfile.REGULAR_TYPES:
        return "link" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "not_a_file"
    if name.startswith("/") or posixpath.isabs(name):
        return "absolute_path"
    if ".." in name.split("/") or "\\" in name:
        return "path_traversal"
    return None


def scan_tar(path: str) -> TarScan:
    """Index the samples of a WebDataset tar without loading their bytes: a direct read
    of the headers for plain tars, Python's tarfile for anything else (extended headers,
    damage, a missing end marker), with the same result."""
    try:
        plain = _scan_plain(path)
    except OSError as e:
        return TarScan(error=str(e) or type(e).__name__)
    return plain if plain is not None else _scan_with_tarfile(path)


def _add(scan: TarScan, kind: bytes, name: str, offset: int, size: int) -> None:
    reason = _unsafe(kind, name)
    if reason:
        if kind != tarfile.DIRTYPE:
            scan.refused[reason] = scan.refused.get(reason, 0) + 1
        return
    key, _, extension = posixpath.basename(name).partition(".")
    scan.samples.setdefault(key, {})[extension.lower()] = Member(name, offset, size)


def _scan_with_tarfile(path: str) -> TarScan:
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
                _add(scan, member.type, member.name, member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as e:
        scan.error = str(e) or type(e).__name__
    return scan


_MAGICS = (b"ustar\x0000", b"ustar  \x00")                # POSIX ustar, GNU
_PLAIN_TYPES = {bytes([t]) for t in b"01234567\x00"}       # no extended, long-name or sparse headers
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
# mode, uid, gid, mtime, devmajor, devminor: (offset, width) in a header's `rest`; tarfile checks them too
_OTHER_NUMBERS = ((0, 8), (8, 8), (16, 8), (24, 12), (209, 8), (217, 8))


def _scan_plain(path: str) -> TarScan | None:
    """The scan of a tar made only of ustar/GNU headers without extensions, read the way
    tarfile reads them; None at the first thing that needs tarfile itself."""
    with open(path, "rb") as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        scan, offset, known = TarScan(), 0, {}
        while offset + 2 * tarfile.BLOCKSIZE <= size:
            block = os.pread(fd, tarfile.BLOCKSIZE, offset)
            if len(block) < tarfile.BLOCKSIZE:
                return None
            if block == _ZERO_BLOCK:
                return scan
            kind = block[156:157]
            # everything but the name, size and checksum: the same in most headers of a
            # tar, so it is checked and summed once
            rest = block[100:124] + block[136:148] + block[156:]
            rest_sum = known.get(rest)
            if rest_sum is None:
                if block[257:265] not in _MAGICS or kind not in _PLAIN_TYPES \
                        or any(_octal(rest[a:a + n]) is None for a, n in _OTHER_NUMBERS):
                    return None
                if len(known) == 1024:  # many kinds of headers (a time per member): keep few
                    known.clear()
                rest_sum = known[rest] = sum(rest)
            checksum, length = _octal(block[148:156]), _octal(block[124:136])
            if checksum != rest_sum + sum(block[:100]) + sum(block[124:136]) + 256 or length is None:
                return None   # the checksum counts its own field as spaces
            name, prefix = _text(block[:100]), _text(block[345:500])
            if kind == tarfile.AREGTYPE and name.endswith("/"):
                kind = tarfile.DIRTYPE
            if kind == tarfile.DIRTYPE:
                name = name.rstrip("/")
            if prefix:
                name = f"{prefix}/{name}"
            data = offset + tarfile.BLOCKSIZE
            if data + length > size:
                return None
            _add(scan, kind, name, data, length)
            regular = kind in tarfile.REGULAR_TYPES
            offset = data + (-(-length // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if regular else 0)
    return None


def _octal(field: bytes) -> int | None:
    """A numeric header field as tarfile reads it (octal digits up to a NUL), or None."""
    if field[0] & 0x80:
        return None  # base-256: tarfile's business
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def read_member(f: BinaryIO, member: Member) -> bytes:
    """A member's bytes (one `pread`, so the file's position does not matter)."""
    data = os.pread(f.fileno(), member.size, member.offset)
    if len(data) != member.size:
        raise EOFError(f"{member.name}: truncated")
    return data


def regular_header(name: str, size: int) -> bytes:
    """The GNU tar header of a regular file `name` of `size` bytes, mtime 0, owner root,
    mode 0644: the bytes tarfile writes for it, built from a template when the name fits
    the header (tarfile's own code otherwise, for long names and huge sizes)."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) >= _NAME_FIELD or size >= _MAX_OCTAL_SIZE:
        return _info(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    block = bytearray(_TEMPLATE)
    block[:len(encoded)] = encoded
    block[124:136] = length = b"%011o\0" % size
    block[148:155] = b"%06o\0" % (_TEMPLATE_SUM + sum(encoded) + sum(length))  # the name and size fields
    return bytes(block)                                                   # are zeros in the template


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_NAME_FIELD, _MAX_OCTAL_SIZE = 100, 8 ** 11
_TEMPLATE = bytearray(_info("", 0).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
_TEMPLATE[124:136] = bytes(12)
_TEMPLATE[148:156] = b" " * 8   # a header's checksum counts its own field as spaces
_TEMPLATE_SUM = sum(_TEMPLATE)


def tar_chunks(samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> Iterator[bytes]:
    """The bytes of a deterministic tar of (key, [(extension, bytes), ...]) samples (what
    tarfile writes in GNU format), in pieces: headers, the data itself (not copied),
    padding, and the end-of-archive blocks."""
    written = 0
    for key, parts in samples:
        for extension, data in parts:
            header = regular_header(f"{key}.{extension}", len(data))
            padding = _ZERO_BLOCK[:-len(data) % tarfile.BLOCKSIZE]
            yield header
            yield data
            if padding:
                yield padding
            written += len(header) + len(data) + len(padding)
    end = written + 2 * tarfile.BLOCKSIZE
    yield bytes(2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE)


def write_tar(out: BinaryIO, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> None:
    """Write samples as a deterministic tar (see `tar_chunks`)."""
    for chunk in tar_chunks(samples):
        out.write(chunk)
