"""Reading MediaWiki `pages-articles` exports (plain XML, bz2, multistream bz2) in chunks.

A dump is cut into chunks of whole pages, numbered in file order, so that a rerun cuts
it the same way and can skip the chunks it has finished:
- a bz2 file made of several streams (Wikipedia's `multistream` dumps, pbzip2, lbzip2)
  is cut at stream boundaries and each worker decompresses its own byte range, in
  parallel; a page that runs past the range is read to its end by the range it starts in;
- a plain XML file or a single-stream bz2 is read in order by one reader, which hands
  blocks of whole pages to the workers.
"""

from __future__ import annotations

import bz2
import html
import mmap
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterator

from wit.formats.errors import WitError

PAGE_OPEN = b"<page>"
PAGE_CLOSE = b"</page>"
ROOT_OPEN = b"<mediawiki"
ROOT_CLOSE = b"</mediawiki>"
_STREAM_HEADER = b"BZh"
_BLOCK_MAGIC = b"1AY&SY"  # 0x314159265359, the first block of a stream follows its header
_READ_BLOCK = 1 << 20
_SNIFF_BYTES = 1 << 16
BZ2_RATIO = 4  # about how many bytes of XML one byte of bz2 holds
# Namespaces whose links are not prose: media (-2), file (6) and category (14). English
# names work on every wiki; each dump's own names come from its <siteinfo>.
HIDDEN_NAMESPACE_KEYS = (-2, 6, 14)
ENGLISH_HIDDEN = ("media", "file", "image", "category")
_NAMESPACE = re.compile(rb'<namespace\b[^>]*\bkey="(-?\d+)"[^>]*>([^<]*)</namespace>')


@dataclass(frozen=True)
class DumpFile:
    """A checked dump file: its kind and, for multistream bz2, where its streams start."""

    path: str
    size: int
    mtime_ns: int
    compressed: bool
    stream_offsets: tuple[int, ...] = ()
    hidden_namespaces: tuple[str, ...] = ENGLISH_HIDDEN   # lower-cased link prefixes that are not prose

    @property
    def multistream(self) -> bool:
        return len(self.stream_offsets) > 1


@dataclass(frozen=True)
class Chunk:
    """Pages of one dump: either `data` (XML bytes handed over by the reader) or the
    compressed byte range [start, end) of whole bz2 streams that the worker reads."""

    chunk_id: str
    path: str
    start: int
    end: int
    data: bytes | None = None
    last: bool = False  # the chunk that must hold the closing </mediawiki>


@dataclass(frozen=True)
class Page:
    title: str
    namespace: int
    redirect: bool
    text: str


def open_dump(path: str) -> DumpFile:
    """Check that `path` is a readable MediaWiki export and find its bz2 streams."""
    try:
        stat = os.stat(path)
        with open(path, "rb") as f:
            magic = f.read(3)
    except OSError as e:
        raise WitError(f"{path}: cannot read Wikipedia dump ({e.strerror or e})") from None
    compressed = magic == _STREAM_HEADER
    head = _sniff(path, compressed)
    if ROOT_OPEN not in head:
        raise WitError(f"{path}: not a MediaWiki XML export (no <mediawiki> root element)")
    offsets = _stream_offsets(path) if compressed else ()
    return DumpFile(path, stat.st_size, stat.st_mtime_ns, compressed, offsets, hidden_namespaces(head))


def hidden_namespaces(head: bytes) -> tuple[str, ...]:
    """The lower-cased names of the media, file and category namespaces in the dump's
    <siteinfo> (`Datei`, `Kategorie`, `ファイル`, ...), with the English ones every wiki takes."""
    names = dict.fromkeys(ENGLISH_HIDDEN)
    for key, name in _NAMESPACE.findall(head.split(b"<page>", 1)[0]):
        if int(key) in HIDDEN_NAMESPACE_KEYS and name.strip():
            names[html.unescape(name.decode("utf-8", "replace")).strip().lower()] = None
    return tuple(names)


def _sniff(path: str, compressed: bool) -> bytes:
    try:
        opener = bz2.open if compressed else open
        with opener(path, "rb") as f:
            return f.read(_SNIFF_BYTES)
    except (OSError, EOFError, ValueError) as e:
        raise WitError(f"{path}: corrupt or truncated bz2 data ({e})") from None


def _stream_offsets(path: str) -> tuple[int, ...]:
    """Byte offsets of the bz2 streams that start with a data block."""
    offsets = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        at = m.find(_STREAM_HEADER)
        while at >= 0:
            level = m[at + 3 : at + 4]
            if level.isdigit() and level != b"0" and m[at + 4 : at + 10] == _BLOCK_MAGIC:
                offsets.append(at)
            at = m.find(_STREAM_HEADER, at + 1)
    return tuple(offsets)


def plan_chunks(dump: DumpFile, file_index: int, chunk_bytes: int) -> Iterator[Chunk]:
    """The chunks of one dump, of about `chunk_bytes` of XML each, in file order."""
    if dump.multistream:
        return iter(_stream_chunks(dump, file_index, chunk_bytes // BZ2_RATIO))
    return _sequential_chunks(dump, file_index, chunk_bytes)


def _stream_chunks(dump: DumpFile, file_index: int, compressed_bytes: int) -> list[Chunk]:
    """Group a multistream file's streams into chunks of about `compressed_bytes`."""
    bounds = [dump.stream_offsets[0]]
    for offset in dump.stream_offsets[1:]:
        if offset - bounds[-1] >= compressed_bytes:
            bounds.append(offset)
    bounds.append(dump.size)
    return [
        Chunk(chunk_id(file_index, i), dump.path, start, end, last=end == dump.size)
        for i, (start, end) in enumerate(zip(bounds, bounds[1:]))
    ]


def _sequential_chunks(dump: DumpFile, file_index: int, chunk_bytes: int) -> Iterator[Chunk]:
    """Read a plain or single-stream file in order, cutting after the first page end past
    every `chunk_bytes` of XML; `start`/`end` are positions in the file on disk."""
    buffer = bytearray()
    index = 0
    consumed = 0
    try:
        with open(dump.path, "rb") as raw:
            stream = bz2.BZ2File(raw) if dump.compressed else raw
            while True:
                block = stream.read(_READ_BLOCK)
                buffer += block
                while True:
                    end = buffer.find(PAGE_CLOSE, max(chunk_bytes - len(PAGE_CLOSE), 0)) if block else len(buffer)
                    if end < 0:
                        break
                    cut = end + len(PAGE_CLOSE) if block else end
                    position = raw.tell()
                    yield Chunk(chunk_id(file_index, index), dump.path, consumed, position,
                                data=bytes(buffer[:cut]), last=not block)
                    del buffer[:cut]
                    index += 1
                    consumed = position
                    if not block:
                        return
    except (OSError, EOFError, ValueError) as e:
        raise WitError(f"{dump.path}: corrupt or truncated bz2 data ({e})") from None


def chunk_id(file_index: int, index: int) -> str:
    return f"{file_index:03d}-{index:06d}"


def read_chunk_xml(chunk: Chunk) -> tuple[bytes, int]:
    """The XML of a chunk and the length of the part it owns: pages starting there are
    its own. A stream chunk reads on past its range to finish the page it started last."""
    if chunk.data is not None:
        return chunk.data, len(chunk.data)
    try:
        with open(chunk.path, "rb") as f:
            f.seek(chunk.start)
            xml = _decompress_streams(f.read(chunk.end - chunk.start))
            tail = b"" if chunk.last else _page_tail(f, xml)
    except (OSError, EOFError, ValueError) as e:
        raise WitError(
            f"{chunk.path}: corrupt or truncated bz2 data in bytes {chunk.start}-{chunk.end} ({e})"
        ) from None
    return xml + tail, len(xml)


def _decompress_streams(data: bytes) -> bytes:
    out = []
    while data:
        decompressor = bz2.BZ2Decompressor()
        out.append(decompressor.decompress(data))
        if not decompressor.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = decompressor.unused_data
    return b"".join(out)


def _page_tail(f, xml: bytes) -> bytes:
    """Bytes after a chunk that complete its last page (pbzip2's streams split pages)."""
    last_open = xml.rfind(PAGE_OPEN)
    open_page = last_open >= 0 and xml.find(PAGE_CLOSE, last_open) < 0
    split_tag = any(xml.endswith(PAGE_OPEN[:n]) for n in range(1, len(PAGE_OPEN)))
    if not (open_page or split_tag):
        return b""
    edge = xml[1 - len(PAGE_CLOSE) :]
    tail = bytearray()
    decompressor = bz2.BZ2Decompressor()
    while PAGE_CLOSE not in edge + tail:
        data = f.read(_READ_BLOCK)
        if not data:
            break
        while data:
            tail += decompressor.decompress(data)
            data = decompressor.unused_data if decompressor.eof else b""
            if decompressor.eof:
                decompressor = bz2.BZ2Decompressor()
    return bytes(tail)


def iter_pages(chunk: Chunk, xml: bytes, own_length: int) -> Iterator[Page]:
    """Pages whose <page> tag starts in the first `own_length` bytes of `xml`."""
    first = xml.find(PAGE_OPEN)
    last_start = xml.rfind(PAGE_OPEN, 0, own_length + len(PAGE_OPEN) - 1)
    if first < 0 or last_start < first:
        return
    end = xml.find(PAGE_CLOSE, last_start)
    if end < 0:
        raise WitError(f"{chunk.path}: truncated XML, a page has no </page> (chunk {chunk.chunk_id})")
    try:
        root = ET.fromstring(b"<pages>" + xml[first : end + len(PAGE_CLOSE)] + b"</pages>")
    except ET.ParseError as e:
        raise WitError(f"{chunk.path}: malformed XML in chunk {chunk.chunk_id} ({e})") from None
    for page in root.iter("page"):
        revisions = page.findall("revision")
        text = revisions[-1].findtext("text") if revisions else None
        yield Page(
            title=page.findtext("title") or "",
            namespace=int(page.findtext("ns") or 0),
            redirect=page.find("redirect") is not None,
            text=text or "",
        )


def check_footer(chunk: Chunk, xml: bytes) -> None:
    """The last chunk of a file must close the root element, or the file was cut short."""
    if chunk.last and ROOT_CLOSE not in xml[xml.rfind(PAGE_CLOSE) + 1 :]:
        raise WitError(f"{chunk.path}: truncated XML, the file ends before </mediawiki>")
