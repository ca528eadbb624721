"""Synthetic MediaWiki exports for tests, in every layout the reader supports, and random
corpora of pages with their reference word counts."""

from __future__ import annotations

import bz2
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from wit.demo.wikis import EXPORT_FOOTER, export_header, export_page

HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>enwiki</dbname>\n  </siteinfo>\n"
)
FOOTER = EXPORT_FOOTER


@dataclass
class WikiPage:
    title: str
    text: str
    ns: int = 0
    redirect: str | None = None


def page_xml(page: WikiPage, page_id: int) -> str:
    return export_page(page.title, page.text, page_id, page.ns, page.redirect)


site_header = export_header   # the export header of another language's wiki, its namespaces in <siteinfo>


def write_dump(path: Path, pages: list[WikiPage], layout: str = "xml", per_stream: int = 2,
               stream_bytes: int = 300, header: str = HEADER) -> Path:
    """Write `pages` as `layout`: "xml", "bz2" (one stream), "multistream" (Wikipedia's:
    header, `per_stream` pages per stream, footer) or "split-streams" (pbzip2-like:
    fixed-size byte blocks, so streams cut pages anywhere)."""
    parts = [page_xml(p, i + 1) for i, p in enumerate(pages)]
    xml = header + "".join(parts) + FOOTER
    if layout == "xml":
        path.write_text(xml, encoding="utf-8")
    elif layout == "bz2":
        path.write_bytes(bz2.compress(xml.encode()))
    elif layout == "multistream":
        groups = [header] + ["".join(parts[i : i + per_stream]) for i in range(0, len(parts), per_stream)]
        path.write_bytes(b"".join(bz2.compress(g.encode()) for g in groups + [FOOTER]))
    elif layout == "split-streams":
        data = xml.encode()
        blocks = [data[i : i + stream_bytes] for i in range(0, len(data), stream_bytes)]
        path.write_bytes(b"".join(bz2.compress(b) for b in blocks))
    else:
        raise ValueError(layout)
    return path


WORDS = [f"w{i}" for i in range(60)] + ["Cat", "dog", "New", "York"]


def random_corpus(seed: int, pages: int) -> tuple[list[WikiPage], Counter, Counter]:
    """Pages of words and punctuation, with reference counts made the obvious way."""
    rng = random.Random(seed)
    out, unigrams, bigrams = [], Counter(), Counter()
    for p in range(pages):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(WORDS[: rng.randint(4, len(WORDS))]) for _ in range(rng.randint(1, 9))]
            unigrams.update(words)
            bigrams.update(zip(words, words[1:]))
            sentences.append(" ".join(words) + rng.choice([".", ",", "!", ";", "?"]))
        markup = rng.choice(["", " {{cite|w1 w2}}", "<ref>w3 w4</ref>", " [[File:a.png|thumb|w5]]"])
        out.append(WikiPage(f"Title {p}", "\n".join(sentences) + markup))
    return out, unigrams, bigrams
