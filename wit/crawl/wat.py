"""Common Crawl WAT files -> image candidates, streaming, with FastWARC and orjson.

Every `IMG@/src` link of an HTML response gives one candidate per distinct non-empty text
among the link's `attrs` (newlines and carriage returns turned into spaces, the ends
stripped, as MetaCLIP's parser does), its url resolved against the page's `<base>` or
url as urljoin resolves it (`wit.crawl.resolve`; a link urljoin refuses is kept as it is,
for the url policy to refuse). A record whose JSON cannot be read is skipped and counted
as corrupt; so is a file that ends inside a gzip member (a truncated download): FastWARC
stops there without a word, so the end of the file is checked.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator
from urllib.parse import urljoin

import orjson
import pyarrow as pa
from fastwarc.warc import ArchiveIterator, WarcRecordType

from wit.crawl.resolve import Resolver

IMAGE_LINK = "IMG@/src"
GZIP_MAGIC = b"\x1f\x8b"
TAIL_BYTES = 1 << 20


@dataclass
class WatCounts:
    records: int = 0
    corrupt_records: int = 0


def image_links(f: BinaryIO, attrs: tuple[str, ...], counts: WatCounts,
                batch_rows: int = 100_000) -> Iterator[pa.Table]:
    """Tables of `batch_rows` candidates or more (the last one may be short) with columns
    url (resolved), text, text_attr (the attribute) and page_url, of every image text of
    the WAT stream `f` (seekable, at its start)."""
    out = _Columns(attrs)
    last_corrupt = False
    try:
        for record in ArchiveIterator(f, record_types=WarcRecordType.metadata, parse_http=False):
            counts.records += 1
            rows = len(out.url)
            try:
                _record_links(orjson.loads(record.reader.read()), out)
            except (ValueError, TypeError, KeyError, AttributeError):
                out.cut(rows)
                counts.corrupt_records += 1
                last_corrupt = True
                continue
            last_corrupt = False
            if len(out.url) >= batch_rows:
                yield out.table()
    except (OSError, ValueError):   # a damaged record: what came before it is kept
        counts.corrupt_records += 1
    else:
        if not last_corrupt and not _ends_cleanly(f):   # a cut record FastWARC did not return
            counts.corrupt_records += 1
    if out.url:
        yield out.table()


class _Columns:
    """The candidates read so far, column by column (attributes and pages as indexes)."""

    def __init__(self, attrs: tuple[str, ...]) -> None:
        self.attrs = attrs
        self.url: list[str] = []
        self.text: list[str] = []
        self.attr: list[int] = []        # index in attrs
        self.page: list[int] = []        # index in page_urls
        self.page_urls: list[str] = []   # appended once a page's candidates are all in

    def cut(self, rows: int) -> None:
        """Forget every candidate after the first `rows` (those of a record found corrupt)."""
        for column in (self.url, self.text, self.attr, self.page):
            del column[rows:]

    def table(self) -> pa.Table:
        def indexed(names: list[str], indexes: list[int]) -> pa.Array:
            return pa.array(names, pa.string()).take(pa.array(indexes, pa.int32()))

        table = pa.table({"url": pa.array(self.url, pa.string()), "text": pa.array(self.text, pa.string()),
                          "text_attr": indexed(list(self.attrs), self.attr),
                          "page_url": indexed(self.page_urls, self.page)})
        self.cut(0)
        self.page_urls.clear()
        return table


def _record_links(record: dict, out: _Columns) -> None:
    envelope = record["Envelope"]
    page_url = envelope["WARC-Header-Metadata"].get("WARC-Target-URI", "")
    html = envelope.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
    if not html:
        return
    resolve = None
    rows = len(out.url)
    urls, texts, attrs = out.url, out.text, out.attr
    for link in [link for link in html.get("Links") or () if link.get("path") == IMAGE_LINK]:
        seen: tuple[str, ...] = ()   # the link's texts so far
        for k, attr in enumerate(out.attrs):
            text = link.get(attr)
            if not text or not isinstance(text, str):
                continue
            text = text.replace("\n", " ").replace("\r", " ").strip()
            if not text or text in seen:
                continue
            if not seen:
                if resolve is None:
                    base = (html.get("Head") or {}).get("Base")
                    resolve = Resolver(urljoin(page_url, base) if base else page_url)
                url = resolve(link.get("url", ""))
            seen += (text,)
            urls.append(url)
            texts.append(text)
            attrs.append(k)
    if len(urls) > rows:
        out.page += [len(out.page_urls)] * (len(urls) - rows)
        out.page_urls.append(page_url)


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
