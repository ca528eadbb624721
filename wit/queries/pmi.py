"""Summing the chunks' counts, and bigram PMI.

Counts are summed with Arrow's hash aggregation a batch of chunk files at a time, so
memory holds the vocabulary, not the chunks. Bigrams are pruned before summing with a
bound that follows from the PMI formula: PMI(x, y) >= p implies c(x) * c(y) <=
c(x y) * N / 2^p, and since c(x y) <= min(c(x), c(y)), both c(x) and c(y) are at most
N / 2^p (and at least the minimum bigram count). With the paper's p = 30 only bigrams
of words rarer than N / 2^30 can qualify, which keeps the bigram table small.
"""

from __future__ import annotations

import math
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_BATCH = 64  # chunk files summed per aggregation


def sum_counts(paths: Iterable[str], keys: list[str], keep=None) -> pa.Table:
    """Sum the `count` column of parquet files grouped by `keys`; `keep(table)` may
    return a row mask applied to each file before summing."""
    total: pa.Table | None = None
    batch: list[pa.Table] = []
    for path in paths:
        table = pq.read_table(path)
        batch.append(table.filter(keep(table)) if keep else table)
        if len(batch) == _BATCH:
            total = _aggregate(batch + ([total] if total is not None else []), keys)
            batch = []
    if batch or total is None:
        total = _aggregate(batch + ([total] if total is not None else []), keys)
    return total


def _aggregate(tables: list[pa.Table], keys: list[str]) -> pa.Table:
    if not tables:
        fields = [pa.field(k, pa.string()) for k in keys] + [pa.field("count", pa.int64())]
        return pa.schema(fields).empty_table()
    summed = pa.concat_tables(tables).group_by(keys).aggregate([("count", "sum")])
    return summed.select(keys + ["count_sum"]).rename_columns(keys + ["count"])


def bigram_counts(
    paths: Iterable[str], unigrams: pa.Table, total_tokens: int, min_count: int, min_pmi: float,
    phrases: Iterable[str] = (),
) -> pa.Table:
    """Summed counts and PMI of every bigram that may reach `min_pmi` (by the bound above)
    and of every bigram spelling one of `phrases` (two-word titles and lemmas, whose
    counts are wanted). PMI = log2(c(x y) * N / (c(x) * c(y))), N = `total_tokens`
    (NLTK's definition). Columns: first, second, count, pmi."""
    max_word_count = total_tokens / 2.0**min_pmi if total_tokens else 0
    counts = unigrams.column("count")
    eligible = unigrams.filter(
        pc.and_(pc.greater_equal(counts, min_count), pc.less_equal(counts, max_word_count))
    ).column("word")
    wanted = pa.array(sorted(set(phrases)), pa.string())

    def keep(table: pa.Table) -> pa.ChunkedArray:
        first, second = table.column("first"), table.column("second")
        may_qualify = pc.and_(pc.is_in(first, value_set=eligible), pc.is_in(second, value_set=eligible))
        if not len(wanted):
            return may_qualify
        phrase = pc.binary_join_element_wise(first, second, " ")
        return pc.or_(may_qualify, pc.is_in(phrase, value_set=wanted))

    pairs = sum_counts(paths, ["first", "second"], keep=keep)
    word_counts = unigrams.rename_columns(["word", "word_count"])
    for side in ("first", "second"):
        pairs = pairs.join(word_counts, keys=side, right_keys="word").rename_columns(
            [*pairs.column_names, f"{side}_count"]
        )
    pmi = pc.subtract(
        pc.add(_log2(pairs, "count"), math.log2(total_tokens) if total_tokens else 0.0),
        pc.add(_log2(pairs, "first_count"), _log2(pairs, "second_count")),
    )
    return pairs.select(["first", "second", "count"]).append_column("pmi", pmi)


def qualifying_bigrams(bigrams: pa.Table, min_count: int, min_pmi: float) -> pa.Table:
    return bigrams.filter(pc.and_(pc.greater_equal(bigrams.column("count"), min_count),
                                  pc.greater_equal(bigrams.column("pmi"), min_pmi)))


def _log2(table: pa.Table, column: str) -> pa.ChunkedArray:
    return pc.log2(pc.cast(table.column(column), pa.float64()))
