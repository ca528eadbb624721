"""A crawl's work on Spark (`--distributor pyspark`): the session, and the grouping of
`--unit image` as a Spark groupBy.

The grouping reads every partition's matched rows, gives each row its bucket (the same
uid-hash bucket as on one machine, `images.buckets_of`), and groups by bucket: each
group, about `--bucket-rows` rows, is grouped into images by `images.group_rows` in a
Python worker, which writes the bucket's images and per-query counts. The files are the
ones a one-machine crawl writes, byte for byte. The executors need the toolkit installed
and the output dir on a file system they all see (as img2dataset's Spark downloads do).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from wit.crawl.image_groups import GROUPED_COLUMNS, WORLDWIDE_SELECTED_SCHEMA, group_rows, write_bucket
from wit.formats.errors import WitError
from wit.formats.queries import EntrySpace

ROW_TYPES = {f.name: f.type for f in WORLDWIDE_SELECTED_SCHEMA if f.name in GROUPED_COLUMNS}   # the matched rows' columns
RESULT_SCHEMA = "bucket long, images long, image_texts long"


@contextlib.contextmanager
def spark_session(master: str | None, processes: int) -> Iterator[Any]:
    """A Spark session on `master` (local mode with `processes` cores without one),
    stopped on exit."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise WitError("--distributor pyspark: pyspark is not installed "
                       "(pip install 'wit-toolkit[spark]')") from None
    spark = SparkSession.builder.master(master or f"local[{processes}]").appName("wit-crawl").getOrCreate()
    try:
        yield spark
    finally:
        spark.stop()


def group_on_spark(spark: Any, row_files: list[str], buckets: int, todo: list[int], space: EntrySpace,
                   images_path: str, counts_path: str) -> dict[int, dict]:
    """Group the matched rows of `row_files` into images, bucket by bucket (those in
    `todo`); `images_path` and `counts_path` are format strings of the bucket number.
    Each written bucket's counts; a bucket with no rows writes nothing."""
    from pyspark.sql import functions as F

    rows = spark.read.option("mergeSchema", "true").parquet(*(os.path.abspath(f) for f in row_files))
    for name in GROUPED_COLUMNS:
        if name not in rows.columns:
            rows = rows.withColumn(name, F.lit(None).cast("string"))
    # images.buckets_of: the uid's first 16 hex digits >> 40, i.e. its first 6
    bucket = F.conv(F.substring("uid", 1, 6), 16, 10).cast("long") % F.lit(buckets)
    rows = rows.select(*GROUPED_COLUMNS).withColumn("bucket", bucket).where(F.col("bucket").isin(todo))

    def group(table: pa.Table) -> pa.Table:   # a closure, not a partial: Spark reads its type hints
        return _group_and_write(space, images_path, counts_path, table)

    results = rows.groupBy("bucket").applyInArrow(group, RESULT_SCHEMA).collect()
    return {r["bucket"]: {"images": r["images"], "image_texts": r["image_texts"]} for r in results}


def _group_and_write(space: EntrySpace, images_path: str, counts_path: str, table: pa.Table) -> pa.Table:
    """One bucket, in a Spark Python worker: group, write its two files, return its counts."""
    number = table["bucket"][0].as_py()
    rows = pa.table({name: table[name].cast(ROW_TYPES[name]) for name in GROUPED_COLUMNS})
    counts = write_bucket(images_path.format(number), counts_path.format(number), *group_rows(rows, space))
    return pa.table({"bucket": [number], **{k: [v] for k, v in counts.items()}},
                    schema=pa.schema([("bucket", pa.int64()), ("images", pa.int64()), ("image_texts", pa.int64())]))
