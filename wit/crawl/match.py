"""Substring matching of texts against the query list (MetaCLIP's semantics, exactly).

A query q matches a text t when f" {q} " occurs in `spaced(t)`; `lowercase` lower-cases
both sides. MetaCLIP walks a pyahocorasick automaton over each spaced text.

Here a batch of texts is matched at once, on tokens. `spaced(t).split(" ")` cuts the
spaced text at every space, so for a query whose words (split at " ") are all non-empty,
f" {q} " occurs in spaced(t) exactly when q's words are consecutive tokens: spaces
delimit both. Tokens become query-word ids (Arrow splits and dictionary-encodes them, so
the vocabulary is consulted once per distinct token); one-word queries
are then an array lookup, and k-word queries a rolling 64-bit hash over k consecutive
ids (only where a window starts with a query's first word and holds query words only),
looked up in a hash table of the queries' hashes and verified id by id. All of it is NumPy,
with no per-text Python loop. Queries with an empty word (leading, trailing or double
spaces) cannot be expressed as tokens and go through a pyahocorasick automaton.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import ahocorasick
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.text import spaced_bytes

SEPARATOR = "\x00"  # between texts in a batch; never in a matched query
STAND_IN = "\x01"   # for a NUL inside a text: like NUL for MetaCLIP, a character of a word, never in a query
_OTHER = -1  # a token that is no query's word
_BREAK = -2  # the separator token: no window spans two texts
_PRIMES = (0x100000001B3, 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


class _Groups:
    """Several queries may share one pattern (lower-casing): pattern g's query ids are
    ids[starts[g]:starts[g + 1]]."""

    def __init__(self, members: list[list[int]]) -> None:
        sizes = [len(m) for m in members]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self.ids = np.fromiter(itertools.chain.from_iterable(members), np.int64, count=int(self.starts[-1]))
        self.single = all(size == 1 for size in sizes)

    def expand(self, texts: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text index, query id) for every hit (text, group)."""
        if self.single:
            return texts, self.ids[groups]
        counts = self.starts[groups + 1] - self.starts[groups]
        first = np.repeat(self.starts[groups] - np.cumsum(counts) + counts, counts)
        return np.repeat(texts, counts), self.ids[first + np.arange(counts.sum())]


class QueryMatcher:
    """Finds, for each text, the ascending ids of the queries it contains."""

    def __init__(self, queries: Sequence[str], lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.query_count = len(queries)
        by_words: dict[tuple[str, ...], list[int]] = {}
        by_pattern: dict[str, list[int]] = {}
        for query_id, query in enumerate(queries):
            key = query.lower() if lowercase else query
            if not key or SEPARATOR in key or STAND_IN in key:
                continue
            words = tuple(key.split(" "))
            if "" in words:
                by_pattern.setdefault(f" {key} ", []).append(query_id)
            else:
                by_words.setdefault(words, []).append(query_id)
        self.vocabulary: dict[str, int] = {SEPARATOR: _BREAK}
        for words in by_words:
            for word in words:
                self.vocabulary.setdefault(word, len(self.vocabulary) - 1)
        self._encoded = {word.encode("utf-8", "surrogatepass"): i for word, i in self.vocabulary.items()}
        self._by_length: dict[int, _Words | _Windows] = {}
        for length, group in itertools.groupby(sorted(by_words, key=len), key=len):
            keys = list(group)
            ids = np.array([[self.vocabulary[w] for w in k] for k in keys], dtype=np.int64)
            groups = _Groups([by_words[k] for k in keys])
            kind = _Words if length == 1 else _Windows
            self._by_length[length] = kind(ids, groups, len(self.vocabulary))
        self._automaton = _automaton(by_pattern) if by_pattern else None

    def match(self, texts: Sequence[str]) -> pa.ListArray:
        """list<int32> of matched query ids per text, ascending."""
        if not texts:
            return pa.array([], pa.list_(pa.int32()))
        joined = SEPARATOR.join(texts)
        if joined.count(SEPARATOR) != len(texts) - 1:
            joined = SEPARATOR.join(t.replace(SEPARATOR, STAND_IN) for t in texts)
        if self.lowercase:
            joined = joined.lower()
        # Each text's stretch of the haystack is exactly spaced(text): " " + text + " ", as
        # UTF-8 bytes (spacing bytes is several times faster than a str with non-ASCII text).
        separator = SEPARATOR.encode()
        haystack = spaced_bytes(joined.encode("utf-8", "surrogatepass").replace(separator, b" " + separator + b" "))
        ids = self._token_ids(haystack)
        text_of_token = np.cumsum(ids == _BREAK)
        found_texts, found_ids = [], []
        for windows in self._by_length.values():
            starts, group = windows.find(ids)
            text, query = windows.groups.expand(text_of_token[starts], group)
            found_texts.append(text)
            found_ids.append(query)
        if self._automaton is not None:
            text, query = self._automaton_hits(haystack.decode("utf-8", "surrogatepass"))
            found_texts.append(text)
            found_ids.append(query)
        return _lists(np.concatenate(found_texts or [np.zeros(0, np.int64)]),
                      np.concatenate(found_ids or [np.zeros(0, np.int64)]), len(texts), self.query_count)

    def _token_ids(self, haystack: bytes) -> np.ndarray:
        """The query-word id of every token of haystack.split(b" "): Arrow splits and
        dictionary-encodes, so the vocabulary is consulted once per distinct token."""
        tokens = pc.split_pattern(pa.array([haystack], pa.large_binary()), " ").flatten()
        encoded = tokens.dictionary_encode()
        distinct = encoded.dictionary.to_pylist()
        table = np.fromiter(map(self._encoded.get, distinct, itertools.repeat(_OTHER)), np.int64,
                            count=len(distinct))
        return table[encoded.indices.to_numpy()]

    def _automaton_hits(self, haystack: str) -> tuple[np.ndarray, np.ndarray]:
        automaton, groups = self._automaton
        hits = np.array(list(automaton.iter(haystack)), dtype=np.int64).reshape(-1, 2)
        separators = np.fromiter(_positions(haystack, SEPARATOR), np.int64)
        return groups.expand(np.searchsorted(separators, hits[:, 0]), hits[:, 1])


class _Words:
    """The one-word queries: a table from word id to group (-1: not a one-word query)."""

    length = 1

    def __init__(self, words: np.ndarray, groups: _Groups, vocabulary_size: int) -> None:
        self.groups = groups
        self.table = np.full(vocabulary_size + 2, -1, dtype=np.int64)  # ids -2 and -1 -> slots 0, 1
        self.table[words[:, 0] + 2] = np.arange(len(words))

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        group = self.table[ids + 2]
        starts = np.flatnonzero(group >= 0)
        return starts, group[starts]


class _Windows:
    """The k-word queries for one k > 1: their word ids, hashed so that windows of k tokens
    can be looked up (a hash table of the queries' hashes, with a multiplier that keeps
    them distinct); a hit is verified word by word."""

    def __init__(self, words: np.ndarray, groups: _Groups, vocabulary_size: int) -> None:
        self.length = words.shape[1]
        self.groups = groups
        self.words = words
        for prime in _PRIMES:
            self.prime = np.uint64(prime)
            hashes = self._hashes(words)
            if len(np.unique(hashes)) == len(hashes):
                break
        else:
            raise RuntimeError("query hashes collide under every multiplier")
        self.index = pd.Index(hashes)
        self.starts_query = np.zeros(vocabulary_size + 2, dtype=bool)  # ids -2 and -1 -> slots 0, 1
        self.starts_query[words[:, 0] + 2] = True

    def _hashes(self, rows: np.ndarray) -> np.ndarray:
        hashes = np.zeros(len(rows), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in rows.T:
                hashes = hashes * self.prime + column.astype(np.uint64)
        return hashes

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start positions of token windows equal to one of the queries, and its group."""
        count = len(ids) - self.length + 1
        if count <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # Only windows that start with a query's first word and hold query words only.
        keep = self.starts_query[ids[:count] + 2]
        words = ids >= 0
        for offset in range(1, self.length):
            keep &= words[offset : offset + count]
        starts = np.flatnonzero(keep)
        windows = ids[starts[:, None] + np.arange(self.length)]
        position = self.index.get_indexer(self._hashes(windows))
        found = position >= 0
        starts, windows, position = starts[found], windows[found], position[found]
        exact = (windows == self.words[position]).all(axis=1)  # never trust a hash alone
        return starts[exact], position[exact]


def _lists(texts: np.ndarray, query_ids: np.ndarray, text_count: int, query_count: int) -> pa.ListArray:
    pairs = np.sort(texts * query_count + query_ids)
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs
    per_text = np.bincount(pairs // query_count, minlength=text_count)
    offsets = np.concatenate([[0], np.cumsum(per_text)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array((pairs % query_count).astype(np.int32)))


def _automaton(by_pattern: dict[str, list[int]]) -> tuple[ahocorasick.Automaton, _Groups]:
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for group, pattern in enumerate(by_pattern):
        automaton.add_word(pattern, group)
    automaton.make_automaton()
    return automaton, _Groups(list(by_pattern.values()))


def _positions(text: str, char: str):
    at = text.find(char)
    while at >= 0:
        yield at
        at = text.find(char, at + 1)
