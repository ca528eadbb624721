"""One worker task: count the words of one chunk of a dump and write them to disk.

Each chunk leaves `ID.unigrams.parquet`, `ID.bigrams.parquet` and `ID.titles.parquet` in
the stage's scratch directory; the stage then marks the chunk done with its page counts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import pyarrow as pa

from wit.formats.atomic import write_parquet
from wit.queries.dumps import ENGLISH_HIDDEN, Chunk, check_footer, iter_pages, read_chunk_xml
from wit.queries.ngrams import count_ngrams
from wit.queries.segment import segmented_text
from wit.queries.wikitext import wikitext_to_text

ARTICLE_NAMESPACE = 0


@dataclass
class ChunkStats:
    """What one chunk held; summed over chunks into stats.json."""

    pages: int = 0
    articles: int = 0
    redirects: int = 0
    other_namespaces: int = 0
    wikitext_bytes: int = 0
    input_bytes: int = 0

    def __add__(self, other: "ChunkStats") -> "ChunkStats":
        return ChunkStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


def chunk_files(scratch: str, chunk_id: str) -> dict[str, str]:
    """Paths of a chunk's outputs, by kind: unigrams, bigrams, titles."""
    base = os.path.join(scratch, chunk_id)
    return {kind: f"{base}.{kind}.parquet" for kind in ("unigrams", "bigrams", "titles")}


def count_chunk(chunk: Chunk, scratch: str, lowercase: bool,
                hidden: tuple[str, ...] = ENGLISH_HIDDEN, lang: str = "") -> tuple[str, ChunkStats]:
    """Clean and count the articles of `chunk` (links into the namespaces `hidden` are not
    prose; a language written without spaces is word-segmented first), write its files;
    its id and page counts."""
    hidden_names = frozenset(hidden)
    segment = segmented_text(lang) if lang else None
    xml, own_length = read_chunk_xml(chunk)
    check_footer(chunk, xml)
    stats = ChunkStats(input_bytes=chunk.end - chunk.start)
    titles, texts = [], []
    for page in iter_pages(chunk, xml, own_length):
        stats.pages += 1
        if page.namespace != ARTICLE_NAMESPACE:
            stats.other_namespaces += 1
        elif page.redirect:
            stats.redirects += 1
        else:
            stats.articles += 1
            stats.wikitext_bytes += len(page.text.encode("utf-8"))
            titles.append(page.title)
            text = wikitext_to_text(page.text, hidden_names)
            texts.append(segment(text) if segment else text)
    unigrams, bigrams = count_ngrams(texts, lowercase)
    files = chunk_files(scratch, chunk.chunk_id)
    write_parquet(files["unigrams"], unigrams)
    write_parquet(files["bigrams"], bigrams)
    write_parquet(files["titles"], pa.table({"title": pa.array(titles, pa.string())}))
    return chunk.chunk_id, stats
