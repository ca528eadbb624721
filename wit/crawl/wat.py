"""Common Crawl WAT files -> image candidates, streaming, with FastWARC and orjson.

Every `IMG@/src` link of an HTML response gives one candidate per distinct non-empty text
among the link's `attrs` (newlines and carriage returns turned into spaces, the ends
stripped, as MetaCLIP's parser does), its url resolved against the page's `<base>` or
url. A record whose JSON cannot be read is skipped and counted as corrupt; so is a file
that ends inside a gzip member (a truncated download): FastWARC stops there without a
word, so the end of the file is checked.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator
from urllib.parse import urljoin

import orjson
from fastwarc.warc import ArchiveIterator, WarcRecordType

IMAGE_LINK = "IMG@/src"
GZIP_MAGIC = b"\x1f\x8b"
TAIL_BYTES = 1 << 20


@dataclass
class WatCounts:
    records: int = 0
    corrupt_records: int = 0


def image_links(f: BinaryIO, attrs: tuple[str, ...], counts: WatCounts) -> Iterator[tuple[str, str, str, str]]:
    """(resolved url, text, attribute, page url) of every image text of the WAT stream `f`
    (seekable, at its start)."""
    last_corrupt = False
    try:
        for record in ArchiveIterator(f, record_types=WarcRecordType.metadata, parse_http=False):
            counts.records += 1
            try:
                links = _record_links(orjson.loads(record.reader.read()), attrs)
            except (ValueError, TypeError, KeyError, AttributeError):
                counts.corrupt_records += 1
                last_corrupt = True
                continue
            last_corrupt = False
            yield from links
    except (OSError, ValueError):   # a damaged record: what came before it is kept
        counts.corrupt_records += 1
        return
    if not last_corrupt and not _ends_cleanly(f):   # a cut record FastWARC did not return
        counts.corrupt_records += 1


def _record_links(record: dict, attrs: tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    envelope = record["Envelope"]
    page_url = envelope["WARC-Header-Metadata"].get("WARC-Target-URI", "")
    html = envelope.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
    if not html:
        return []
    out = []
    resolve = None
    for link in html.get("Links") or ():
        if link.get("path") != IMAGE_LINK:
            continue
        seen: list[str] = []
        for attr in attrs:
            text = link.get(attr)
            if not isinstance(text, str):
                continue
            text = text.replace("\n", " ").replace("\r", " ").strip()
            if text and text not in seen:
                seen.append(text)
                if resolve is None:
                    base = (html.get("Head") or {}).get("Base")
                    resolve = Resolver(urljoin(page_url, base) if base else page_url)
                out.append((resolve(link.get("url", "")), text, attr, page_url))
    return out


class Resolver:
    """`urljoin(base, url)` for the links of one page, with the same result, faster for the
    plain urls most links are (no dot segments, empty segments, params, query, fragment,
    spaces or escapes to interpret): those are put together from the page's directory and
    root, which urljoin computes once; every other url goes through urljoin."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.fast = base.startswith(("http://", "https://"))
        if self.fast:
            self.scheme = base[: base.index(":") + 3]
            self.root = urljoin(base, "/")[:-1]
            self.directory = urljoin(base, "x")[:-1]

    def __call__(self, url: str) -> str:
        if self.fast and _PLAIN.fullmatch(url) and "/." not in url and url[:1] != ".":
            if url.startswith(("http://", "https://")):
                if not url.startswith(self.scheme):
                    return url        # another scheme: urljoin returns it as it is
                if url[len(self.scheme):len(self.scheme) + 1] not in ("", "/"):
                    return url        # same scheme with a host: urljoin rebuilds it unchanged
            elif "//" not in url:     # urljoin would drop empty segments
                if url.startswith("/"):
                    return self.root + url
                if url and ":" not in url.split("/", 1)[0]:
                    return self.directory + url
        return urljoin(self.base, url)


_PLAIN = re.compile(r"[A-Za-z0-9_~!$&'()*+,=:@%./-]*")   # no ; ? # \\ [ ] space or control


def _ends_cleanly(f: BinaryIO) -> bool:
    """Whether a gzip file ends with a complete member (true for a file that is not gzip).
    The last member starts at one of the gzip signatures in the last MiB: decoding from
    the right one reaches the end of a member exactly at the end of the file; only when
    none does is the whole file decoded to be sure."""
    size = f.seek(0, 2)
    f.seek(0)
    if f.read(2) != GZIP_MAGIC:
        return True
    window = min(size, TAIL_BYTES)
    f.seek(size - window)
    tail = f.read(window)
    starts = [m.start() for m in re.finditer(re.escape(GZIP_MAGIC + b"\x08"), tail)]
    if any(_complete_members([tail[at:]]) for at in reversed(starts)):
        return True
    if window == size:
        return False
    f.seek(0)
    return _complete_members(iter(lambda: f.read(1 << 20), b""))


def _complete_members(chunks: Iterable[bytes]) -> bool:
    """Whether the bytes are whole gzip members, one after another, nothing after them."""
    member, fed = zlib.decompressobj(31), False
    try:
        for chunk in chunks:
            while chunk:
                member.decompress(chunk, 1 << 20)
                fed = True
                chunk = member.unconsumed_tail
                if member.eof:
                    chunk = member.unused_data + chunk
                    member, fed = zlib.decompressobj(31), False
    except zlib.error:
        return False
    return not fed
