"""Matches between 64-bit hashes at a Hamming radius, without comparing all pairs.

The index is faiss's multi-index hashing (`IndexBinaryMultiHash`): the 64 bits are cut
into `nhash` disjoint keys of `b` bits, `b` about log2(n) so that a bucket holds about
one code. Two hashes within distance r agree, by pigeonhole, on some key up to
r // nhash flipped bits, so probing every key with that many flips finds every match
(exact recall); only the codes found are compared in full.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.filter.hashes import hashed
from wit.filter.removal import Removed

BATCH = 1 << 18   # queries per range search: bounds the memory of its result


class HashIndex:
    """The codes (uint8[n, 8]) searchable for every code within `radius` of a query."""

    def __init__(self, codes: np.ndarray, radius: int) -> None:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)   # which CPU build it loads
        import faiss

        bits = int(np.clip(np.ceil(np.log2(max(len(codes), 2))), 8, 24))
        self.nhash, self.radius = 64 // bits, radius
        self.index = faiss.IndexBinaryMultiHash(64, self.nhash, bits)
        self.index.nflip = radius // self.nhash
        self.index.add(np.ascontiguousarray(codes))

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, code row, distance) with distance <= radius, by query row."""
        found = []
        for start in range(0, len(queries), BATCH):
            batch = np.ascontiguousarray(queries[start:start + BATCH])
            lims, distances, labels = self.index.range_search(batch, self.radius + 1)  # radius is exclusive
            rows = np.repeat(np.arange(start, start + len(batch)), np.diff(lims).astype(np.int64))
            found.append((rows, labels.astype(np.int64), distances.astype(np.int32)))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
        return tuple(np.concatenate(part) for part in zip(*found))


def first_kept(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicates among codes given in keep-priority order (uid order): going down the
    list, a code not yet removed is kept and removes every later code within `radius` of
    it. Returns, per code, the row that removed it (-1: kept) and the distance."""
    by = np.full(len(codes), -1, np.int64)
    distance = np.zeros(len(codes), np.int32)
    if not len(codes):
        return by, distance
    rows, labels, distances = HashIndex(codes, radius).search(codes)
    later = labels > rows
    rows, labels, distances = rows[later], labels[later], distances[later]
    order = np.lexsort((labels, rows))
    rows, labels, distances = rows[order].tolist(), labels[order].tolist(), distances[order].tolist()
    for row, label, d in zip(rows, labels, distances):   # only the rows with a match
        if by[row] < 0 and by[label] < 0:
            by[label], distance[label] = row, d
    return by, distance


class NearDup:
    """Among the samples kept so far, in uid order: a later one within `radius` of a kept one
    is removed (the match: the uid of the kept one)."""
    name = "near_dup"

    @classmethod
    def from_config(cls, config, inputs) -> "NearDup | None":
        return cls(config.hamming) if config.near_dup else None

    def __init__(self, radius: int) -> None:
        self.radius = radius

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        by_uid = pc.sort_indices(samples["uid"]).to_numpy()
        rows, codes = hashed(samples["phash"].take(pa.array(by_uid)), alive[by_uid])
        rows = by_uid[rows]
        by, distance = first_kept(codes, self.radius)
        uids = samples["uid"]
        for i in np.flatnonzero(by >= 0):
            yield Removed(int(rows[i]), "phash", uids[int(rows[by[i]])].as_py(), float(distance[i]))
