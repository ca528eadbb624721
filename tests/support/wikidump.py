"""Synthetic MediaWiki exports for tests, in every layout the reader supports."""

from __future__ import annotations

import bz2
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>enwiki</dbname>\n  </siteinfo>\n"
)
FOOTER = "</mediawiki>\n"


@dataclass
class WikiPage:
    title: str
    text: str
    ns: int = 0
    redirect: str | None = None


def page_xml(page: WikiPage, page_id: int) -> str:
    redirect = f'    <redirect title="{escape(page.redirect)}" />\n' if page.redirect else ""
    return (
        f"  <page>\n    <title>{escape(page.title)}</title>\n    <ns>{page.ns}</ns>\n"
        f"    <id>{page_id}</id>\n{redirect}    <revision>\n      <id>{page_id + 1000}</id>\n"
        f'      <text xml:space="preserve">{escape(page.text)}</text>\n    </revision>\n  </page>\n'
    )


def write_dump(path: Path, pages: list[WikiPage], layout: str = "xml", per_stream: int = 2,
               stream_bytes: int = 300) -> Path:
    """Write `pages` as `layout`: "xml", "bz2" (one stream), "multistream" (Wikipedia's:
    header, `per_stream` pages per stream, footer) or "split-streams" (pbzip2-like:
    fixed-size byte blocks, so streams cut pages anywhere)."""
    parts = [page_xml(p, i + 1) for i, p in enumerate(pages)]
    xml = HEADER + "".join(parts) + FOOTER
    if layout == "xml":
        path.write_text(xml, encoding="utf-8")
    elif layout == "bz2":
        path.write_bytes(bz2.compress(xml.encode()))
    elif layout == "multistream":
        groups = [HEADER] + ["".join(parts[i : i + per_stream]) for i in range(0, len(parts), per_stream)]
        path.write_bytes(b"".join(bz2.compress(g.encode()) for g in groups + [FOOTER]))
    elif layout == "split-streams":
        data = xml.encode()
        blocks = [data[i : i + stream_bytes] for i in range(0, len(data), stream_bytes)]
        path.write_bytes(b"".join(bz2.compress(b) for b in blocks))
    else:
        raise ValueError(layout)
    return path
