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


def bigram_pmi(
    paths: Iterable[str], unigrams: pa.Table, total_tokens: int, min_count: int, min_pmi: float
) -> pa.Table:
    """Bigrams seen at least `min_count` times with PMI >= `min_pmi`, where
    PMI = log2(c(x y) * N / (c(x) * c(y))) and N = `total_tokens` (NLTK's definition).
    Columns: first, second, count, pmi, first_count, second_count."""
    max_word_count = total_tokens / 2.0**min_pmi if total_tokens else 0
    counts = unigrams.column("count")
    eligible = unigrams.filter(
        pc.and_(pc.greater_equal(counts, min_count), pc.less_equal(counts, max_word_count))
    ).column("word")

    def both_eligible(table: pa.Table) -> pa.ChunkedArray:
        return pc.and_(
            pc.is_in(table.column("first"), value_set=eligible),
            pc.is_in(table.column("second"), value_set=eligible),
        )

    pairs = sum_counts(paths, ["first", "second"], keep=both_eligible)
    pairs = pairs.filter(pc.greater_equal(pairs.column("count"), min_count))
    word_counts = unigrams.rename_columns(["word", "word_count"])
    for side in ("first", "second"):
        pairs = pairs.join(word_counts, keys=side, right_keys="word").rename_columns(
            [*pairs.column_names, f"{side}_count"]
        )
    log = lambda column: pc.log2(pc.cast(pairs.column(column), pa.float64()))  # noqa: E731
    pmi = pc.subtract(
        pc.add(log("count"), math.log2(total_tokens) if total_tokens else 0.0),
        pc.add(log("first_count"), log("second_count")),
    )
    pairs = pairs.append_column("pmi", pmi)
    return pairs.filter(pc.greater_equal(pairs.column("pmi"), min_pmi))
