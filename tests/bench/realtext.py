"""Real text for the benchmarks: the articles of the real English Wikipedia excerpt that
the gensim wheel ships (see wit/enwiki_excerpt.py), as sentences."""

from __future__ import annotations

import re

from wit.enwiki_excerpt import enwiki_excerpt
from wit.queries.dumps import iter_pages, open_dump, plan_chunks, read_chunk_xml
from wit.queries.wikitext import wikitext_to_text

SENTENCE = re.compile(r"[^.!?\n]{20,200}[.!?]")


def real_pages() -> list[tuple[str, list[str]]]:
    """(title, sentences) of every article of the real Wikipedia excerpt."""
    dump = open_dump(str(enwiki_excerpt()))
    out = []
    for chunk in plan_chunks(dump, 0, 4 << 20):
        xml, own = read_chunk_xml(chunk)
        for page in iter_pages(chunk, xml, own):
            if page.namespace == 0 and not page.redirect:
                sentences = [s.strip() for s in SENTENCE.findall(wikitext_to_text(page.text))]
                if sentences:
                    out.append((page.title, sentences))
    return out
