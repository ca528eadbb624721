"""The one safe WebDataset tar reader, and the deterministic tar writer.

Reading groups members into samples the way WebDataset does: a sample is a run of
consecutive members sharing a key, the key being the member path up to the first dot of
its basename (`a/K.jpg` and `b/K.jpg` are two samples), the extension the rest, lower-cased.
On top of that it refuses what could hurt a reader: members with absolute paths, `..`,
links, devices or other non-regular files (counted by reason), a key that comes back
later in the tar (the later run is dropped, `duplicate_key`, never merged), and a member
whose extension the sample already has (the sample is dropped, `duplicate_member`).
Reading stops at the first unreadable header, at a member that runs past the end of the
file or at a missing end-of-archive marker, keeping the samples read before it.
Plain headers are read directly, everything else through tarfile, with one result; a
stream (a url, a `pipe:` command) is read through tarfile with the same grouping.
Which image a sample holds is one rule: the first of IMAGE_EXTENSIONS it has.
Writing produces byte-identical tars for the same samples (the bytes tarfile writes):
members in a fixed order, mtime 0, owner root, mode 0644, no user or group names.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Callable, Generic, Iterable, Iterator, TypeVar

IMAGE_EXTENSIONS = ("jpg", "jpeg", "webp", "png")  # in order of preference
T = TypeVar("T")


@dataclass
class Member:
    """Where one member's bytes lie in its tar."""

    name: str
    offset: int
    size: int


@dataclass
class TarScan:
    """What reading one tar found: its samples in order, (key, {extension: Member}), and
    what was refused or dropped, by reason."""

    samples: list[tuple[str, dict[str, Member]]] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> members or samples
    error: str | None = None  # why reading stopped early, if it did


def image_extension(parts: dict[str, object]) -> str | None:
    """The extension of a sample's image: the first of IMAGE_EXTENSIONS it has."""
    return next((e for e in IMAGE_EXTENSIONS if e in parts), None)


def split_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name as WebDataset splits it, or None without a dot."""
    directory, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _unsafe(kind: bytes, name: str) -> str | None:
    if kind not in tarfile.REGULAR_TYPES:
        return "link" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "not_a_file"
    if name.startswith("/") or posixpath.isabs(name):
        return "absolute_path"
    if ".." in name.split("/") or "\\" in name or "\0" in name:
        return "path_traversal"
    return None


class SampleGrouper(Generic[T]):
    """Members in tar order in, samples out: WebDataset's grouping with the safety rules
    above. `member` says whether a member belongs to a sample (and starts a new one when
    its key differs); `add` gives it the member's value; finished samples collect in
    `done` (take them with `take`), the refused and dropped in `refused`."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()
        self.done: list[tuple[str, dict[str, T]]] = []
        self.started = 0  # samples begun, the one being read included
        self._key: str | None = None
        self._parts: dict[str, T] | None = None
        self._extensions: set[str] = set()   # of the current run, read or not
        self._bad = False
        self._seen: set[str] = set()

    def member(self, kind: bytes, name: str) -> str | None:
        """The member's extension if it is part of a sample (in `current_key`), else None."""
        reason = _unsafe(kind, name)
        if reason:
            if kind != tarfile.DIRTYPE:
                self.refused[reason] += 1
            return None
        parsed = split_name(name)
        if parsed is None:
            self.refused["no_extension"] += 1
            return None
        key, extension = parsed
        if key != self._key:
            self._close()
            self._key, self._parts, self._extensions, self._bad = key, {}, set(), key in self._seen
            if self._bad:
                self.refused["duplicate_key"] += 1
            else:
                self.started += 1
            self._seen.add(key)
        if self._bad:
            return None
        if extension in self._extensions:
            self.refused["duplicate_member"] += 1
            self._bad = True
            self.started -= 1
            return None
        self._extensions.add(extension)
        return extension

    def add(self, extension: str, value: T) -> None:
        if not self._bad and self._parts is not None:
            self._parts[extension] = value

    def _close(self) -> None:
        if self._key is not None and not self._bad:
            self.done.append((self._key, self._parts))
        self._key, self._parts = None, None

    def finish(self) -> None:
        self._close()

    def take(self) -> list[tuple[str, dict[str, T]]]:
        done, self.done = self.done, []
        return done


def scan_tar(path: str) -> TarScan:
    """Index the samples of a WebDataset tar without loading their bytes: a direct read
    of the headers for plain tars, Python's tarfile for anything else (extended headers,
    damage, a missing end marker), with the same result. Only regular files are read."""
    if not os.path.isfile(path):
        return TarScan(error="not a regular file")
    try:
        plain = _scan_plain(path)
    except OSError as e:
        return TarScan(error=str(e) or type(e).__name__)
    return plain if plain is not None else _scan_with_tarfile(path)


def _result(grouper: SampleGrouper[Member], error: str | None = None) -> TarScan:
    grouper.finish()
    return TarScan(grouper.take(), dict(grouper.refused), error)


def _add(grouper: SampleGrouper[Member], kind: bytes, name: str, offset: int, size: int) -> None:
    extension = grouper.member(kind, name)
    if extension is not None:
        grouper.add(extension, Member(name, offset, size))


def _scan_with_tarfile(path: str) -> TarScan:
    grouper: SampleGrouper[Member] = SampleGrouper()
    error = None
    try:
        size = os.path.getsize(path)
        with tarfile.open(path, "r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    if size < tar.offset + 2 * tarfile.BLOCKSIZE:
                        error = "truncated: no end-of-archive marker"
                    break
                if member.offset_data + member.size > size:
                    error = f"truncated: {member.name} runs past the end of the file"
                    break
                _add(grouper, member.type, member.name, member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as e:
        error = str(e) or type(e).__name__
    return _result(grouper, error)


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
        grouper: SampleGrouper[Member] = SampleGrouper()
        offset, known = 0, {}
        while offset + 2 * tarfile.BLOCKSIZE <= size:
            block = os.pread(fd, tarfile.BLOCKSIZE, offset)
            if len(block) < tarfile.BLOCKSIZE:
                return None
            if block == _ZERO_BLOCK:
                return _result(grouper)
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
            _add(grouper, kind, name, data, length)
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


def open_url(url: str) -> IO[bytes]:
    """A binary stream for a local path, a `pipe:` command or any fsspec url."""
    if url.startswith(("pipe:", "http://", "https://")):
        import webdataset as wds  # its gopen runs pipe: commands and curl for http

        return wds.gopen(url, "rb")
    if "://" in url:
        import fsspec

        return fsspec.open(url, "rb").open()
    if not os.path.isfile(url):
        raise FileNotFoundError(url) if not os.path.lexists(url) else OSError(f"{url}: not a regular file")
    return open(url, "rb", buffering=1 << 20)


@dataclass
class StreamedSample:
    """One sample read from a tar stream: its key and the bytes of the extensions asked for."""

    key: str
    parts: dict[str, bytes]

    @property
    def image(self) -> bytes | None:
        extension = image_extension(self.parts)
        return self.parts[extension] if extension else None


def stream_samples(stream: IO[bytes], wanted: Iterable[str] | Callable[[str], bool], skip: int = 0,
                   refused: Counter[str] | None = None) -> Iterator[StreamedSample]:
    """The samples of a tar stream in order, from sample number `skip` on, with the bytes
    of the `wanted` extensions, or of those `wanted(extension)` accepts (the data of skipped
    samples is not read). Refused and
    dropped members are counted in `refused`; a damaged stream raises tarfile.TarError,
    EOFError or OSError after the samples before the damage."""
    accept = wanted if callable(wanted) else set(wanted).__contains__
    grouper: SampleGrouper[bytes] = SampleGrouper()
    emitted = 0

    def finished() -> Iterator[StreamedSample]:
        nonlocal emitted
        for key, parts in grouper.take():
            emitted += 1
            if emitted > skip:
                yield StreamedSample(key, parts)

    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                extension = grouper.member(info.type, info.name)
                yield from finished()
                if extension is None or grouper.started <= skip or not accept(extension):
                    continue
                grouper.add(extension, tar.extractfile(info).read())
        grouper.finish()
        yield from finished()
    finally:
        if refused is not None:
            refused.update(grouper.refused)
