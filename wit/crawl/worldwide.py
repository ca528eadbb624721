"""Worldwide matching (MetaCLIP 2): each text is matched only against the list of its own
language.

A text's language is the pool's (`--lang-col`: a column such as LAION-2B-multi's, its
codes read as Wikipedia codes through `wit.formats.languages`) or else the offline
language-ID model's (`wit.formats.languages`). A text in a language the worldwide list has no
`{lang}.json` for goes to `other`: counted, never matched. Each language's matcher is
MetaCLIP 2's rule (`QueryMatcher(worldwide=True)`), built the first time a worker meets a
text in that language, from that language's file alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.languages import LanguageIdentifier
from wit.crawl.match import QueryMatcher
from wit.formats.languages import OTHER, wiki_language
from wit.formats.queries import EntrySpace, read_queries

EMPTY = pa.array([], pa.list_(pa.int32()))


class WorldwideMatcher:
    """languages(texts, pool) -> each text's list language (or `other`); match(texts, langs)
    -> each text's ascending indexes in its language's list."""

    def __init__(self, files: dict[str, str], space: EntrySpace, lowercase: bool = False, kana: bool = False) -> None:
        self.files, self.space = files, space
        self.lowercase, self.kana = lowercase, kana
        self.identifier = LanguageIdentifier(set(files))
        self._matchers: dict[str, QueryMatcher] = {}

    def languages(self, texts: Sequence[str], pool: Sequence[str | None] | None = None) -> list[str]:
        if pool is None:
            return self.identifier.identify(texts)
        listed = self.identifier.listed
        return [wiki_language(code.strip().lower().replace("-", "_"), listed) if code else OTHER for code in pool]

    def _matcher(self, lang: str) -> QueryMatcher:
        if lang not in self._matchers:
            entries = read_queries(self.files[lang]).queries
            self._matchers[lang] = QueryMatcher(entries, self.lowercase, worldwide=True, kana=self.kana)
        return self._matchers[lang]

    def match(self, texts: Sequence[str], langs: Sequence[str]) -> pa.ListArray:
        if not texts:
            return EMPTY
        codes = np.asarray(langs, dtype=object)
        order = np.argsort(codes, kind="stable")
        parts, lengths = [], []
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.concatenate([[True], sorted_codes[1:] != sorted_codes[:-1], [True]]))
        for start, end in zip(bounds[:-1], bounds[1:]):
            lang, rows = sorted_codes[start], order[start:end]
            if lang == OTHER or lang not in self.files:
                parts.append(pa.array([[]] * len(rows), pa.list_(pa.int32())))
            else:
                parts.append(self._matcher(lang).match([texts[i] for i in rows]))
            lengths.append(len(rows))
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = np.arange(len(order))
        return pa.concat_arrays(parts).take(pa.array(inverse))


def language_summary(space: EntrySpace, found: dict, matched: np.ndarray, thresholds: dict[str, float],
                      selected: Counter[str]) -> dict:
    """crawl.json's `languages`: per language its list size, t, texts, matched candidates,
    matched count over its entries and selected; `other` counts the texts in no listed language."""
    summary = {}
    for lang, where in space.slices().items():
        counts = found.get(lang, {})
        summary[lang] = {"queries": where.stop - where.start, "t": thresholds[lang], "texts": counts.get("texts", 0),
                         "matched": counts.get("matched", 0), "entry_matches": int(matched[where].sum()),
                         "queries_matched": int((matched[where] > 0).sum()), "selected": selected.get(lang, 0)}
    summary[OTHER] = {"texts": found.get(OTHER, {}).get("texts", 0)}
    return summary


def count_languages(languages: dict[str, Counter[str]], langs: pa.Array | pa.ChunkedArray, hits: pa.Array) -> None:
    """Texts and matched texts per language (`other` included)."""
    for name, values in (("texts", langs), ("matched", langs.filter(hits))):
        for entry in pc.value_counts(values).to_pylist():
            languages.setdefault(entry["values"], Counter())[name] += entry["counts"]
