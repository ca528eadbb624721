"""Substring matching of texts against the query list (MetaCLIP's semantics, exactly).

A query q matches a text t when f" {q} " occurs in `spaced(t)`; `lowercase` lower-cases
both sides. MetaCLIP walks a pyahocorasick automaton over each spaced text.

Here a batch of texts is matched at once, on tokens. `spaced(t).split(" ")` cuts the
spaced text at every space, so for a query whose words (split at " ") are all non-empty,
f" {q} " occurs in spaced(t) exactly when q's words are consecutive tokens: spaces
delimit both. Tokens become query-word ids (Arrow splits and dictionary-encodes them, so
the vocabulary is consulted once per distinct token); one-word queries are then an array
lookup, and k-word queries a rolling 64-bit hash over k consecutive ids (only where a
window starts with a query's first word and holds query words only), looked up in a hash
table of the queries' hashes and verified id by id. All of it is NumPy, with no per-text
Python loop. Queries with an empty word (leading, trailing or double spaces) go through a
pyahocorasick automaton.

Worldwide lists (MetaCLIP 2, `worldwide=True`): an entry e matches when its pattern
`wit.formats.text.spaced_entry(e)` occurs in spaced(t): padded with a space only on a side
whose character is neither punctuation nor CJK-like. Then every CJK-like or punctuation
character is also a token of its own: a *virtual* boundary is put between two characters
where either is one and neither is a space, in the texts and the entries alike, and each
token records whether a real space or a virtual boundary comes before it. A pattern occurs
exactly when the entry's tokens are consecutive tokens of the text with the same kind of
boundary between each two, a real space before the first when the entry is padded on the
left and after the last when it is padded on the right. So worldwide matching is the same
vectorised token matching, at character granularity where the scripts have no spaces.
Where MetaCLIP 2's automaton keeps one id of entries with the same pattern (the last one
added), so does this.
"""

from __future__ import annotations

import itertools
import re
from typing import Sequence

import ahocorasick
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.text import (ASCII_PUNCTUATION, CJK_LIKE_BLOCKS, KANA_BLOCKS, WIDE_PUNCTUATION,
                               spaced_bytes, spaced_entry)

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

    def __init__(self, queries: Sequence[str], lowercase: bool = False, worldwide: bool = False,
                 kana: bool = False) -> None:
        self.lowercase = lowercase
        self.query_count = len(queries)
        self.bounds = _Boundaries(kana) if worldwide else None
        by_words: dict[tuple, list[int]] = {}
        by_pattern: dict[str, list[int]] = {}
        for query_id, query in enumerate(queries):
            key = query.lower() if lowercase else query
            if not key or SEPARATOR in key or STAND_IN in key:
                continue
            if self.bounds is None:
                words, pattern = (tuple(key.split(" ")), (), True, True), f" {key} "
            else:
                words, pattern = self.bounds.entry(key), spaced_entry(key, kana)
            if "" in words[0]:
                by_pattern.setdefault(pattern, []).append(query_id)
            else:
                by_words.setdefault(words, []).append(query_id)
        if worldwide:   # one id per pattern, the last, as MetaCLIP 2's automaton keeps
            by_words = {k: ids[-1:] for k, ids in by_words.items()}
            by_pattern = {k: ids[-1:] for k, ids in by_pattern.items()}
        self.vocabulary: dict[str, int] = {SEPARATOR: _BREAK}
        for words, _, _, _ in by_words:
            for word in words:
                self.vocabulary.setdefault(word, len(self.vocabulary) - 1)
        self._encoded = {word.encode("utf-8", "surrogatepass"): i for word, i in self.vocabulary.items()}
        self._words: _Words | None = None
        self._by_length: dict[int, _Windows] = {}
        for length, group in itertools.groupby(sorted(by_words, key=lambda k: len(k[0])), key=lambda k: len(k[0])):
            keys = list(group)
            ids = np.array([[self.vocabulary[w] for w in k[0]] for k in keys], dtype=np.int64)
            inner = np.array([k[1] or (True,) * (length - 1) for k in keys], dtype=bool).reshape(len(keys), length - 1)
            sides = _Sides(np.array([k[2] for k in keys]), np.array([k[3] for k in keys]))
            groups = _Groups([by_words[k] for k in keys])
            if length == 1:
                self._words = _Words(ids, groups, len(self.vocabulary), sides)
            else:
                self._by_length[length] = _Windows(ids, inner if worldwide else None, groups, len(self.vocabulary),
                                                   sides)
        _choose_prime(list(self._by_length.values()))
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
        if self.bounds is None:
            tokens, real = pc.split_pattern(pa.array([haystack], pa.large_binary()), " ").flatten(), None
        else:
            tokens, real = self.bounds.tokens(haystack)
        ids = self._token_ids(tokens)
        text_of_token = np.cumsum(ids == _BREAK)
        found_texts, found_ids = [], []
        hits = [(self._words, *self._words.find(ids, real))] if self._words is not None else []
        hits += _find_windows(self._by_length, ids, real)
        for windows, starts, group in hits:
            text, query = windows.groups.expand(text_of_token[starts], group)
            found_texts.append(text)
            found_ids.append(query)
        if self._automaton is not None:
            text, query = self._automaton_hits(haystack.decode("utf-8", "surrogatepass"))
            found_texts.append(text)
            found_ids.append(query)
        return _lists(np.concatenate(found_texts or [np.zeros(0, np.int64)]),
                      np.concatenate(found_ids or [np.zeros(0, np.int64)]), len(texts), self.query_count)

    def _token_ids(self, tokens: pa.Array) -> np.ndarray:
        """The query-word id of every token: Arrow dictionary-encodes them, so the
        vocabulary is consulted once per distinct token."""
        encoded = tokens.dictionary_encode()
        distinct = encoded.dictionary.to_pylist()
        table = np.fromiter(map(self._encoded.get, distinct, itertools.repeat(_OTHER)), np.int64,
                            count=len(distinct))
        return table[encoded.indices.to_numpy()]

    def _automaton_hits(self, haystack: str) -> tuple[np.ndarray, np.ndarray]:
        automaton, groups = self._automaton
        hits = np.array(list(automaton.iter(haystack)), dtype=np.int64).reshape(-1, 2)
        separators = np.fromiter((found.start() for found in re.finditer(SEPARATOR, haystack)), np.int64)
        return groups.expand(np.searchsorted(separators, hits[:, 0]), hits[:, 1])


class _Sides:
    """Whether a worldwide pattern needs a real space before its first token and after its
    last (it is padded there); the boundaries inside it are part of its tokens' key."""

    def __init__(self, left: np.ndarray, right: np.ndarray) -> None:
        self.left, self.right = left, right

    def keep(self, starts: np.ndarray, query: np.ndarray, length: int, real: np.ndarray | None) -> np.ndarray:
        """Which hits (a window at `starts` equal to `query`'s tokens) have its boundaries."""
        if real is None:   # MetaCLIP 1: every boundary is a space and every pattern padded
            return np.ones(len(starts), dtype=bool)
        return (real[starts] | ~self.left[query]) & (real[starts + length] | ~self.right[query])


class _Words:
    """The one-word queries: a table from word id to group (-1: not a one-word query)."""

    length = 1

    def __init__(self, words: np.ndarray, groups: _Groups, vocabulary_size: int, sides: _Sides) -> None:
        self.groups, self.sides = groups, sides
        self.table = np.full(vocabulary_size + 2, -1, dtype=np.int64)  # ids -2 and -1 -> slots 0, 1
        self.table[words[:, 0] + 2] = np.arange(len(words))

    def find(self, ids: np.ndarray, real: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        group = self.table[ids + 2]
        starts = np.flatnonzero(group >= 0)
        group = group[starts]
        if real is None:   # MetaCLIP 1: nothing more to check
            return starts, group
        keep = self.sides.keep(starts, group, 1, real)
        return starts[keep], group[keep]


class _Windows:
    """The k-word queries for one k > 1: their word ids and inner boundary kinds (`_keys`),
    Horner-hashed (`_choose_prime`) into a table and a bitmap of the hashes' top bits; a hit
    is verified word by word. `_find_windows` hashes the windows incrementally."""

    BITS = 22   # bitmap of 4M entries: one bit of the hash's top 22 per query hash

    def __init__(self, ids: np.ndarray, inner: np.ndarray | None, groups: _Groups, vocabulary_size: int,
                 sides: _Sides) -> None:
        self.length = ids.shape[1]
        self.groups, self.sides = groups, sides
        self.worldwide = inner is not None   # else every boundary is a space: the ids are the keys
        self.words = _keys(ids, inner) if self.worldwide else ids
        self.starts_query = np.zeros(vocabulary_size + 2, dtype=bool)  # ids -2 and -1 -> slots 0, 1
        self.starts_query[ids[:, 0] + 2] = True

    def hashes(self, prime: np.uint64) -> np.ndarray:   # as `_find_windows` computes them
        out = np.zeros(len(self.words), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in self.words.T:
                out = out * prime + column.astype(np.uint64)
        return out

    def use(self, prime: np.uint64, hashes: np.ndarray) -> None:
        self.prime = prime
        self.index = pd.Index(hashes)
        self.bitmap = np.zeros(1 << self.BITS, dtype=bool)
        self.bitmap[hashes >> np.uint64(64 - self.BITS)] = True

    def lookup(self, hashes: np.ndarray, starts: np.ndarray, ids: np.ndarray,
               real: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The windows at `starts` equal to a query, with its boundaries (`_Sides`); its group."""
        maybe = self.bitmap[hashes >> np.uint64(64 - self.BITS)]
        starts, hashes = starts[maybe], hashes[maybe]
        position = self.index.get_indexer(hashes)
        found = position >= 0
        starts, position = starts[found], position[found]
        span = starts[:, None] + np.arange(self.length)
        windows = _keys(ids[span], real[span[:, 1:]]) if self.worldwide else ids[span]
        exact = (windows == self.words[position]).all(axis=1)  # never trust a hash alone
        starts, position = starts[exact], position[exact]
        if real is None:
            return starts, position
        keep = self.sides.keep(starts, position, self.length, real)
        return starts[keep], position[keep]


def _choose_prime(windows: list[_Windows]) -> None:
    """One multiplier for every length, under which no two queries of a length collide."""
    for prime in _PRIMES:
        prime = np.uint64(prime)
        hashes = [w.hashes(prime) for w in windows]
        if all(len(np.unique(h)) == len(h) for h in hashes):
            for w, h in zip(windows, hashes):
                w.use(prime, h)
            return
    raise RuntimeError("query hashes collide under every multiplier")


def _find_windows(by_length: dict[int, _Windows], ids: np.ndarray,
                  real: np.ndarray | None) -> list[tuple[_Windows, np.ndarray, np.ndarray]]:
    """Every length's hits. The hash of each window of k tokens is the hash of its first
    k - 1 tokens times the multiplier plus the key of its k-th (`_keys`: the id, doubled
    plus the boundary kind in worldwide matching), so each length costs a few passes over
    the tokens; only windows that start with a query's first word and hold query words
    only are looked up, the bitmap first."""
    if not by_length:
        return []
    longest = max(by_length)
    prime = next(iter(by_length.values())).prime
    keys = ids if real is None else 2 * ids + real[: len(ids)].astype(np.int64)   # a token after the first
    keys = keys.astype(np.uint64)
    hashes = ids.astype(np.uint64)
    words = ids >= 0
    inside = words.copy()
    found = []
    with np.errstate(over="ignore"):
        for length in range(2, longest + 1):
            count = len(ids) - length + 1
            if count <= 0:
                break
            hashes = hashes[:count] * prime + keys[length - 1:length - 1 + count]
            inside = inside[:count] & words[length - 1:length - 1 + count]
            windows = by_length.get(length)
            if windows is None:
                continue
            starts = np.flatnonzero(inside & windows.starts_query[ids[:count] + 2])
            found.append((windows, *windows.lookup(hashes[starts], starts, ids, real)))
    return found


class _Boundaries:
    """The virtual boundaries of worldwide matching (module docstring): around each
    CJK-like or punctuation character (MetaCLIP 2's classes; `kana`: kana too), where no
    space is. Characters are classified by table: bytes for ASCII, a table of the Basic
    Multilingual Plane, the blocks above it by range."""

    def __init__(self, kana: bool) -> None:
        blocks = CJK_LIKE_BLOCKS + (KANA_BLOCKS if kana else ())
        self.bmp = np.zeros(0x10000, dtype=bool)
        for low, high in blocks:
            if low < 0x10000:
                self.bmp[low:min(high, 0xFFFF) + 1] = True
        self.bmp[[ord(c) for c in ASCII_PUNCTUATION | WIDE_PUNCTUATION]] = True
        self.ascii = self.bmp[:256].copy()
        self.ascii[128:] = False
        self.astral = [(low, high) for low, high in blocks if high >= 0x10000]

    def tokens(self, data: bytes) -> tuple[pa.Array, np.ndarray]:
        """The tokens of `data` (UTF-8) cut at its spaces and at its virtual boundaries (as if
        a space were put at each virtual boundary and the result split at spaces; built as
        one Arrow array over `data` without its spaces), and per token whether a real space
        (not a virtual boundary) comes before it, with one more entry, True, for the space
        after the last token."""
        raw = np.frombuffer(data, dtype=np.uint8)
        at, _ = self._virtual(raw)
        mark = (raw == 0x20).astype(np.int8)                   # 1: a space, 2: a virtual boundary
        mark[at] = 2
        where = np.flatnonzero(mark)
        real = np.ones(len(where) + 2, dtype=bool)
        real[1:-1] = mark[where] == 1
        # a boundary's offset in `data` without its spaces: minus the spaces before it
        offsets = np.empty(len(where) + 2, dtype=np.int64)
        offsets[1:-1] = where - (np.cumsum(real[1:-1]) - real[1:-1])
        compact = raw[mark != 1]
        offsets[0], offsets[-1] = 0, len(compact)
        count = len(where)
        tokens = pa.Array.from_buffers(pa.large_binary(), count + 1,
                                       [None, pa.py_buffer(offsets), pa.py_buffer(compact.tobytes())])
        return tokens, real

    def _virtual(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The byte offsets of the virtual boundaries, and where each character starts (None
        for ASCII: a character per byte)."""
        if len(raw) and raw.max() < 0x80:
            starts, bare, space = None, self.ascii[raw], raw == 0x20
        else:
            starts = np.flatnonzero((raw & 0xC0) != 0x80)      # where each character starts
            lead = raw[starts]
            bare = self.ascii[lead]
            # two-byte characters (below U+0800) are never bare: only three- and four-byte ones are looked up
            wide = np.flatnonzero(lead >= 0xE0)
            bare[wide] = self._bare(self._code_points(raw, starts[wide]))
            space = lead == 0x20
        need = (bare[1:] | bare[:-1]) & ~space[1:] & ~space[:-1]
        return ((np.flatnonzero(need) + 1) if starts is None else starts[1:][need]), starts

    def entry(self, key: str) -> tuple[tuple[str, ...], tuple[bool, ...], bool, bool]:
        """An entry's tokens, the kinds of its inner boundaries, and whether it is padded on
        the left and on the right (needs a real space there)."""
        tokens, real = self.tokens(key.encode("utf-8", "surrogatepass"))
        words = tuple(w.decode("utf-8", "surrogatepass") for w in tokens.to_pylist())
        bare = self._bare(np.array([ord(key[0]), ord(key[-1])], dtype=np.int64))
        return words, tuple(bool(r) for r in real[1:len(words)]), not bare[0], not bare[1]

    def _bare(self, points: np.ndarray) -> np.ndarray:
        """Punctuation or CJK-like: no padding on that side, a token of its own."""
        inside = self.bmp[np.minimum(points, 0xFFFF)]
        above = np.flatnonzero(points > 0xFFFF)   # only these are compared with the blocks above it
        high = points[above]
        inside[above] = np.any([(high >= low) & (high <= top) for low, top in self.astral] or [high < 0], axis=0)
        return inside

    @staticmethod
    def _code_points(raw: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The code point of the three- or four-byte character starting at each of `starts`
        (valid UTF-8, or lone surrogates written with surrogatepass)."""
        b0, b1, b2 = (raw[starts + i].astype(np.int32) for i in range(3))
        points = ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F)
        four = np.flatnonzero(b0 >= 0xF0)   # above the Basic Multilingual Plane: a fourth byte
        b3 = raw[starts[four] + 3].astype(np.int32)
        points[four] = ((b0[four] & 0x07) << 18) | ((b1[four] & 0x3F) << 12) | ((b2[four] & 0x3F) << 6) | (b3 & 0x3F)
        return points


def _keys(ids: np.ndarray, inner: np.ndarray | None) -> np.ndarray:
    """Rows of k token ids as lookup keys: after the first, each id doubled plus the kind of
    the boundary before it (1: a real space; always 1 without worldwide boundaries)."""
    keys = ids.copy()
    keys[:, 1:] = 2 * ids[:, 1:] + (1 if inner is None else inner.astype(np.int64))
    return keys


def _lists(texts: np.ndarray, query_ids: np.ndarray, text_count: int, query_count: int) -> pa.ListArray:
    # each part of the hits comes in text order: timsort ("stable") merges such runs fast
    pairs = np.sort(texts * query_count + query_ids, kind="stable")
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

