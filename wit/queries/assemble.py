"""The query list in the paper's order, capped at a size, as the QUERIES dir's table.

Sources come in order: unigrams (by count), bigrams (by PMI), titles (by views), then
WordNet head lemmas not already present (by Wikipedia count, then WordNet order). A
language of a worldwide list (`--lang`) is assembled as MetaCLIP 2 does instead
(`assemble_worldwide`: its order and per-source caps). An
entry found by several sources keeps its first position and lists every source. When
the list is over `size`, the lowest-ranked entries of the last sources are dropped.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from wit.formats.queries import SOURCES
from wit.formats.text import is_punctuation


@dataclass
class Query:
    query: str
    sources: list[str] = field(default_factory=list)
    count: int = 0
    pmi: float | None = None
    views: int = 0


@dataclass
class Candidates:
    """Each source's qualifying entries, best first, with what is known of them."""

    unigrams: list[tuple[str, int]]  # (word, count)
    bigrams: list[tuple[str, int, float]]  # (bigram, count, pmi)
    titles: list[tuple[str, int]]  # (title, views)
    wordnet: list[str]
    counts: dict[str, int]  # Wikipedia counts of other entries, where known


def normalize(query: str) -> str | None:
    """Single-spaced, stripped; None for an empty or pure-punctuation entry."""
    query = " ".join(query.split())
    return query if any(c.isalnum() for c in query) else None


def assemble(candidates: Candidates, size: int) -> tuple[list[Query], dict[str, dict[str, int]]]:
    """The final list and, per source, how many entries qualified and how many are listed."""
    entries: dict[str, Query] = {}

    def add(source: str, text: str, **known) -> None:
        text = normalize(text)
        if text is None:
            return
        entry = entries.setdefault(text, Query(text, count=candidates.counts.get(text, 0)))
        if source not in entry.sources:
            entry.sources.append(source)
        for name, value in known.items():
            setattr(entry, name, value)

    for word, count in candidates.unigrams:
        add("unigram", word, count=count)
    for bigram, count, pmi in candidates.bigrams:
        add("bigram", bigram, count=count, pmi=pmi)
    for title, views in candidates.titles:
        add("title", title, views=views)
    ranked_wordnet = sorted(
        enumerate(dict.fromkeys(candidates.wordnet)),
        key=lambda item: (-candidates.counts.get(item[1], 0), item[0]),
    )
    for _, lemma in ranked_wordnet:
        add("wordnet", lemma)

    queries = list(entries.values())[:size]
    qualified = {
        "unigram": len(candidates.unigrams), "bigram": len(candidates.bigrams),
        "title": len(candidates.titles), "wordnet": len(ranked_wordnet),
    }
    summary = {
        source: {"qualified": qualified[source],
                 "listed": sum(source in q.sources for q in queries),
                 "first_listed_by": sum(q.sources[0] == source for q in queries)}
        for source in SOURCES
    }
    return queries, summary


def query_columns(queries: list[Query]) -> dict[str, list]:
    """The columns of queries.parquet (query_id aside) in query order."""
    return {"query": [q.query for q in queries], "sources": [q.sources for q in queries],
            "count": [q.count for q in queries], "pmi": [q.pmi for q in queries],
            "views": [q.views for q in queries]}


# ---- one language of a worldwide list (`--lang`, MetaCLIP 2's build_metadata.py) ----------

UNIGRAM_SHARE, UNIGRAM_CAP = 0.10, 251_465   # of the distinct words counted
BIGRAM_SHARE, BIGRAM_CAP = 0.40, 100_646     # of the unigrams listed
TITLE_SHARE, TITLE_CAP = 0.76, 61_235        # of the titles with views
MAX_ENTRY_CHARS = 256
NUMBERS = tuple(str(n) for n in range(100))  # MetaCLIP 2 gives every language 0 .. 99
WORLDWIDE_SOURCES = ("number", "wordnet", "unigram", "bigram", "title")


def worldwide_entry(text: str) -> str | None:
    """An entry as MetaCLIP 2 keeps it (stripped, at most MAX_ENTRY_CHARS, not only
    punctuation), single-spaced, without control characters; else None."""
    text = " ".join(text.split())
    if not text or len(text) > MAX_ENTRY_CHARS or all(is_punctuation(c) or c == "¿" for c in text) \
            or any(unicodedata.category(c) == "Cc" for c in text):
        return None
    return text


def worldwide_caps(vocabulary: int, titles: int) -> dict[str, int]:
    """The per-source caps of one language: unigrams and titles from their totals (the
    bigram cap follows from the unigrams actually listed, see assemble_worldwide)."""
    return {"unigram": min(UNIGRAM_CAP, int(vocabulary * UNIGRAM_SHARE)),
            "title": min(TITLE_CAP, int(titles * TITLE_SHARE))}


def assemble_worldwide(candidates: Candidates, vocabulary: int) -> tuple[list[Query], dict]:
    """One language's list in MetaCLIP 2's order: the numbers 0-99, WordNet lemmas, the top
    unigrams by count, bigrams by PMI, titles by views, each source adding entries not
    already listed up to its cap; and per source its qualified, listed and cap."""
    entries: dict[str, Query] = {}
    caps = worldwide_caps(vocabulary, len(candidates.titles))
    added = dict.fromkeys(WORLDWIDE_SOURCES, 0)

    def add(source: str, text: str, cap: int | None = None, **known) -> bool:
        """Add an entry; False once the source's cap is reached."""
        if cap is not None and added[source] >= cap:
            return False
        text = worldwide_entry(text)
        if text is None or text in entries:
            return True
        entries[text] = Query(text, [source], **{"count": candidates.counts.get(text, 0), **known})
        added[source] += 1
        return True

    for number in NUMBERS:
        add("number", number)
    for lemma in candidates.wordnet:
        add("wordnet", lemma)
    for word, count in candidates.unigrams:
        if not add("unigram", word, caps["unigram"], count=count):
            break
    caps["bigram"] = min(BIGRAM_CAP, int(added["unigram"] * BIGRAM_SHARE))
    for bigram, count, pmi in candidates.bigrams:
        if not add("bigram", bigram, caps["bigram"], count=count, pmi=pmi):
            break
    for title, views in candidates.titles:
        if not add("title", title, caps["title"], views=views):
            break
    qualified = {"number": len(NUMBERS), "wordnet": len(candidates.wordnet), "unigram": len(candidates.unigrams),
                 "bigram": len(candidates.bigrams), "title": len(candidates.titles)}
    summary = {source: {"qualified": qualified[source], "listed": added[source], "cap": caps.get(source)}
               for source in WORLDWIDE_SOURCES}
    return list(entries.values()), summary
