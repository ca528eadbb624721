"""`wit build-queries` on the real English Wikipedia excerpt shipped in the gensim wheel."""

import bz2
import gzip
import json
import re

import mwparserfromhell
import mwxml
import pyarrow.parquet as pq
import pytest

from wit.queries.build import BuildConfig, run as build_queries
from wit.queries.ngrams import count_ngrams

RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\||<[^>]*>|\bref\b|\bthumb\b|\d*px\b|\bhttps?\b|&\w+;|==")
WELL_KNOWN = ["Lincoln", "Apollo", "Alabama", "Aristotle", "Achilles", "Algeria", "Alaska"]


@pytest.fixture(scope="module")
def excerpt_queries(enwiki_excerpt, wordnet_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("excerpt")
    views = tmp / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(
        b"en Abraham_Lincoln 900 0\nen.m Aristotle 80 0\nen Aristotle 10 0\nen Alaska 40 0\n"
        b"en Not_In_Excerpt 5000 0\nen Talk:Alabama 800 0\n"
    ))
    out = tmp / "q"
    stats = build_queries(BuildConfig(
        wiki_dumps=(str(enwiki_excerpt),), out=str(out), pageviews=(str(views),),
        wordnet=str(wordnet_dir), min_count=20, min_pmi=10.0, min_views=70, workers=2, chunk_mb=1.0,
    ))
    return stats, pq.read_table(out / "queries.parquet").to_pylist(), out


def reference_counts(path) -> dict[str, int]:
    """Word counts of mwparserfromhell's strip_code() over the same articles."""
    counts: dict[str, int] = {}
    with bz2.open(path) as f:
        for page in mwxml.Dump.from_file(f):
            if page.namespace == 0 and not page.redirect:
                for revision in page:
                    words, _ = count_ngrams([mwparserfromhell.parse(revision.text or "").strip_code()])
                    for w, n in zip(words.column("word").to_pylist(), words.column("count").to_pylist()):
                        counts[w] = counts.get(w, 0) + n
    return counts


@pytest.mark.slow
def test_pages_and_sources(excerpt_queries):
    stats, queries, out = excerpt_queries
    assert stats["pages"]["pages"] == 206
    assert stats["pages"]["articles"] + stats["pages"]["redirects"] + stats["pages"]["other_namespaces"] == 206
    assert stats["wordnet_synsets"] == 117_659
    listed = {s: v["listed"] for s, v in stats["sources"].items()}
    assert listed["unigram"] > 2000 and listed["bigram"] > 1000 and listed["wordnet"] > 80_000
    titles = {q["query"]: q["views"] for q in queries if "title" in q["sources"]}
    assert titles == {"Abraham Lincoln": 900, "Aristotle": 90}
    assert json.loads((out / "metadata.json").read_text()) == [q["query"] for q in queries]


def test_no_markup_residue_in_wikipedia_entries(excerpt_queries):
    _, queries, _ = excerpt_queries
    wiki = [q["query"] for q in queries if {"unigram", "bigram"} & set(q["sources"])]
    residue = [q for q in wiki if RESIDUE.search(q)]
    assert residue == []
    for word in ("cite", "thumb", "px", "ref", "url", "http", "nbsp", "isbn"):
        assert word not in wiki


@pytest.mark.slow
def test_well_known_words_have_plausible_counts(excerpt_queries, enwiki_excerpt):
    stats, queries, _ = excerpt_queries
    counts = {q["query"]: q["count"] for q in queries}
    reference = reference_counts(enwiki_excerpt)
    for word in WELL_KNOWN:
        # mwparserfromhell keeps image captions and reference text, so it counts a little more
        assert 100 <= counts[word] and 0.75 * reference[word] <= counts[word] <= reference[word], word
    assert 0.04 < counts["the"] / stats["tokens"] < 0.08
    assert counts["Abraham Lincoln"] >= 10  # a two-word title's count is its bigram count
