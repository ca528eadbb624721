"""Substring matching of texts against the query list (MetaCLIP's semantics, exactly).

A query q matches a text t when f" {q} " occurs in `spaced(t)`. Matching is
case-sensitive unless `lowercase`, which lower-cases both sides.

MetaCLIP spaces each text and walks a pyahocorasick automaton over it, collecting ids
in a Python set. Here a whole batch of texts is spaced and scanned in one pass (texts
joined by a character no query holds), and the matches are mapped back to their texts
and de-duplicated with NumPy; the per-text Python work disappears.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import ahocorasick
import numpy as np
import pyarrow as pa

from wit.text import spaced

SEPARATOR = "\x00"  # between texts in a batch; removed from texts, never in a pattern


class QueryMatcher:
    """Finds, for each text, the sorted ids of the queries it contains."""

    def __init__(self, queries: Sequence[str], lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.query_count = len(queries)
        patterns: dict[str, list[int]] = {}
        for query_id, query in enumerate(queries):
            key = query.lower() if lowercase else query
            if key and SEPARATOR not in key:
                patterns.setdefault(f" {key} ", []).append(query_id)
        # Lower-casing can give several queries one pattern: a pattern's value is a group
        # index, and group_ids[group_starts[g]:group_starts[g + 1]] are its query ids.
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for group, pattern in enumerate(patterns):
            self.automaton.add_word(pattern, group)
        self.automaton.make_automaton()
        sizes = [len(ids) for ids in patterns.values()]
        self.group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.group_ids = np.fromiter(itertools.chain.from_iterable(patterns.values()), np.int64,
                                     count=int(self.group_starts[-1]))
        self.single_id = all(size == 1 for size in sizes)

    def match(self, texts: Sequence[str]) -> pa.ListArray:
        """list<int32> of matched query ids per text, ascending."""
        if not texts:
            return pa.array([], pa.list_(pa.int32()))
        joined = SEPARATOR.join(texts)
        if joined.count(SEPARATOR) != len(texts) - 1:
            joined = SEPARATOR.join(t.replace(SEPARATOR, " ") for t in texts)
        if self.lowercase:
            joined = joined.lower()
        # spaced() wraps the whole batch; wrapping each text too keeps every text's
        # spaced form exactly as spaced(text): " " + text + " ".
        haystack = spaced(joined.replace(SEPARATOR, f" {SEPARATOR} "))
        hits = np.fromiter(itertools.chain.from_iterable(self.automaton.iter(haystack)), np.int64)
        ends, groups = hits[0::2], hits[1::2]
        separators = np.fromiter(_positions(haystack, SEPARATOR), np.int64, count=len(texts) - 1)
        text_of_hit = np.searchsorted(separators, ends)
        if self.single_id:
            query_ids = self.group_ids[groups]
        else:
            counts = self.group_starts[groups + 1] - self.group_starts[groups]
            text_of_hit = np.repeat(text_of_hit, counts)
            starts = np.repeat(self.group_starts[groups] - np.cumsum(counts) + counts, counts)
            query_ids = self.group_ids[starts + np.arange(counts.sum())]
        pairs = np.unique(text_of_hit * self.query_count + query_ids)
        texts_of_pairs = pairs // self.query_count
        offsets = np.searchsorted(texts_of_pairs, np.arange(len(texts) + 1)).astype(np.int32)
        values = pa.array((pairs % self.query_count).astype(np.int32))
        return pa.ListArray.from_arrays(pa.array(offsets), values)


def _positions(text: str, char: str):
    at = text.find(char)
    while at >= 0:
        yield at
        at = text.find(char, at + 1)
