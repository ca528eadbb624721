"""The query list in the paper's order, capped at a size, as the QUERIES dir's table.

Sources come in order: unigrams (by count), bigrams (by PMI), titles (by views), then
WordNet head lemmas not already present (by Wikipedia count, then WordNet order). An
entry found by several sources keeps its first position and lists every source. When
the list is over `size`, the lowest-ranked entries of the last sources are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wit.formats.queries import SOURCES


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
