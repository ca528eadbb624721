"""Image-centric candidates (`wit crawl --unit image`, MetaCLIP 2's curation).

The matched candidates are grouped by image (uid) across the whole pool before balancing,
with flat memory: each candidates partition is cut into buckets by uid hash (one row group
per bucket, in the scratch dir), then each bucket, about `bucket_rows` rows, is grouped
on its own (`group_rows`; on Spark, the same function per group of a groupBy, spark.py). An image keeps every distinct matched text, each with its query ids, the
attribute or column it came from and up to MAX_PAGES distinct page urls. Then:
- `matched[q]` counts the (image, distinct text) pairs whose text matches q;
- one text per image is drawn, fixed by (seed, uid) (`wit.formats.balance.pick`);
- the image is kept by the per-entry draws over the drawn text's queries (the same
  `balanced` as pair mode: kept when any draw u(seed, uid, q) < t / max(matched[q], t),
  i.e. with probability 1 - prod(1 - p_q)); with a worldwide list each text has its
  language, its query ids index that language's list and t is the language's own.
`selected/BBBBB.parquet` holds one row per kept image, in uid order: the drawn text as
`text` and `query_ids`, and `texts`, its distinct texts (the drawn one first, at most
MAX_TEXTS) with their query ids, which img2dataset puts in each sample's json.
Nothing depends on the partitioning, the worker count or the order of the pool.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit.formats.atomic import atomic_path, write_parquet
from wit.formats.balance import balanced, pick, uid_keys
from wit.formats.crawl import write_query_counts
from wit.formats.queries import EntrySpace
from wit.formats.shards import MAX_TEXTS

MAX_PAGES = 16   # page urls kept per (image, text)
GROUPED_COLUMNS = ("uid", "url", "text", "query_ids", "text_attr", "page_url", "lang")
TEXT_TYPE = pa.struct([("text", pa.string()), ("query_ids", pa.list_(pa.int32()))])
WORLDWIDE_TEXT_TYPE = pa.struct([("text", pa.string()), ("query_ids", pa.list_(pa.int32())), ("lang", pa.string())])
ENTRY_TYPE = pa.struct([("text", pa.string()), ("query_ids", pa.list_(pa.int32())), ("text_attr", pa.string()),
                        ("page_urls", pa.list_(pa.string())), ("lang", pa.string())])
IMAGES_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("texts", pa.list_(ENTRY_TYPE))])
SELECTED_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                             ("query_ids", pa.list_(pa.int32())), ("text_attr", pa.string()),
                             ("page_url", pa.string()), ("texts", pa.list_(TEXT_TYPE))])
# a worldwide crawl's selection: the drawn text's language, and each text's
WORLDWIDE_SELECTED_SCHEMA = pa.schema([*(f for f in SELECTED_SCHEMA if f.name != "texts"), ("lang", pa.string()),
                                       ("texts", pa.list_(WORLDWIDE_TEXT_TYPE))])


def bucket_count(matched_rows: int, bucket_rows: int) -> int:
    return max(1, math.ceil(matched_rows / bucket_rows))


def buckets_of(uids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Each uid's bucket, from its leading hex digits (a uid is a hash: uniform)."""
    return ((uid_keys(uids) >> np.uint64(40)) % np.uint64(buckets)).astype(np.int64)


def write_buckets(candidates: str, target: str, buckets: int) -> dict[str, int]:
    """Write one candidates partition to `target`, a row group per non-empty bucket (in
    bucket order); which row group holds which bucket."""
    table = pq.read_table(candidates)
    bucket = buckets_of(table["uid"], buckets)
    order = np.argsort(bucket, kind="stable")
    table, bucket = table.take(order), bucket[order]
    starts = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]])) if len(bucket) else []
    groups = {}
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, table.schema) as writer:
        for group, (start, end) in enumerate(zip(starts, [*starts[1:], len(bucket)])):
            writer.write_table(table.slice(start, end - start), row_group_size=end - start)
            groups[str(bucket[start])] = group
    return groups


def read_bucket(parts: list[tuple[str, int]]) -> pa.Table:
    """The matched rows of one bucket: row group `g` of each bucket file."""
    tables = []
    for path, group in parts:
        bucket_file = pq.ParquetFile(path)
        wanted = [c for c in GROUPED_COLUMNS if c in bucket_file.schema_arrow.names]
        tables.append(bucket_file.read_row_group(group, columns=wanted))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def group_rows(rows: pa.Table, space: EntrySpace) -> tuple[pa.Table, np.ndarray]:
    """The images of one bucket's matched rows (any order), in uid order, and `matched`
    over their (image, distinct text) pairs (by dense id, see EntrySpace)."""
    if rows.num_rows == 0:
        return IMAGES_SCHEMA.empty_table(), np.zeros(space.size, np.int64)
    for name in ("page_url", "lang"):
        if name not in rows.column_names:
            rows = rows.append_column(name, pa.nulls(rows.num_rows, pa.string()))
    # a text has one language (identified from the text, or the pool's where it says):
    # where the pool says two, the first in code order is kept
    rows = rows.sort_by([("uid", "ascending"), ("text", "ascending"), ("lang", "ascending"),
                         ("page_url", "ascending")])
    uid, text, page = (rows[c].combine_chunks() for c in ("uid", "text", "page_url"))
    first = _starts(uid, text)                          # the first row of each (image, text)
    pair_of_row = np.cumsum(first) - 1
    pages = _distinct_pages(page, first, pair_of_row)
    pairs = rows.filter(pa.array(first))
    image_start = _starts(pairs["uid"].combine_chunks())
    query_ids = pairs["query_ids"].combine_chunks()
    matched = np.bincount(space.dense(query_ids, pairs["lang"])[0], minlength=space.size)
    offsets = np.append(np.flatnonzero(image_start), len(image_start)).astype(np.int32)
    entries = pa.StructArray.from_arrays(
        [pairs["text"].combine_chunks(), query_ids.cast(pa.list_(pa.int32())),
         pairs["text_attr"].combine_chunks(), pages, pairs["lang"].combine_chunks().cast(pa.string())],
        fields=list(ENTRY_TYPE))
    starts = pa.array(image_start)
    images = pa.table({"uid": pairs["uid"].filter(starts), "url": pairs["url"].filter(starts),
                       "texts": pa.ListArray.from_arrays(pa.array(offsets), entries)}, schema=IMAGES_SCHEMA)
    return images, matched.astype(np.int64)


def _starts(*columns: pa.Array) -> np.ndarray:
    """True where a row differs from the row before in any of the (sorted) columns."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, bool)
    new = np.zeros(n, bool)
    new[0] = True
    for column in columns:
        differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, n - 1)), True)
        new[1:] |= differs.to_numpy(zero_copy_only=False)
    return new


def _distinct_pages(page: pa.Array, first: np.ndarray, pair_of_row: np.ndarray) -> pa.ListArray:
    """Per (image, text): its distinct non-null page urls, at most MAX_PAGES, sorted."""
    new_page = _starts(page) | first
    keep = new_page & ~np.asarray(page.is_null().to_numpy(zero_copy_only=False))
    kept_pair = pair_of_row[keep]
    rank = np.arange(len(kept_pair)) - np.searchsorted(kept_pair, kept_pair)
    capped = rank < MAX_PAGES
    values = page.filter(pa.array(keep)).filter(pa.array(capped))
    counts = np.bincount(kept_pair[capped], minlength=int(first.sum()))
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), values)


def write_bucket(images_path: str, counts_path: str, images: pa.Table, matched: np.ndarray) -> dict[str, int]:
    """A grouped bucket's images file and per-query counts; its counters."""
    write_parquet(images_path, images)
    write_query_counts(counts_path, matched)
    return {"images": images.num_rows,
            "image_texts": int(pc.sum(pc.list_value_length(images["texts"])).as_py() or 0)}


def select_images(images: pa.Table, probabilities: np.ndarray, seed: int, space: EntrySpace) -> pa.Table:
    """The kept images of one bucket: the drawn text, its queries (and language) and the
    texts for the json."""
    schema = WORLDWIDE_SELECTED_SCHEMA if space.worldwide else SELECTED_SCHEMA
    if images.num_rows == 0:
        return schema.empty_table()
    texts = images["texts"].combine_chunks()
    counts = pc.list_value_length(texts).to_numpy()
    starts = texts.offsets.to_numpy()[:-1]
    drawn = starts + pick(uid_keys(images["uid"]), counts, seed)
    entries = pc.list_flatten(texts)
    chosen = entries.take(pa.array(drawn))
    keep = balanced(images["uid"], chosen.field("query_ids"), probabilities, seed, chosen.field("lang"), space)
    kept = images.filter(pa.array(keep))
    chosen = chosen.filter(pa.array(keep))
    pages = chosen.field("page_urls")
    columns = {
        "uid": kept["uid"], "url": kept["url"], "text": chosen.field("text"), "query_ids": chosen.field("query_ids"),
        "text_attr": chosen.field("text_attr"), "page_url": pc.list_element(_padded(pages), 0),
        **({"lang": chosen.field("lang")} if space.worldwide else {}),
        "texts": _json_texts(texts.filter(pa.array(keep)), (drawn - starts)[keep], space.worldwide),
    }
    return pa.table(columns, schema=schema)


def _padded(pages: pa.Array) -> pa.Array:
    """Page-url lists with a null in the empty ones, so that element 0 always exists."""
    empty = pc.equal(pc.list_value_length(pages), 0)
    return pc.if_else(empty, pa.array([[None]] * len(pages), pages.type), pages)


def _json_texts(texts: pa.ListArray, drawn: np.ndarray, worldwide: bool) -> pa.ListArray:
    """Each image's texts for its json: the drawn one first, then the others in order, at
    most MAX_TEXTS, each with its query ids (built with Arrow takes, no Python objects)."""
    offsets = texts.offsets.to_numpy()
    starts, counts = offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64)
    kept = np.minimum(counts, MAX_TEXTS)
    first = np.concatenate([[0], np.cumsum(kept)])
    # position j within an image's new list: 0 is the drawn text, j > 0 the (j-1)-th other
    j = np.arange(first[-1]) - np.repeat(first[:-1], kept)
    drawn_of = np.repeat(drawn, kept)
    other = j - 1 + (j - 1 >= drawn_of)
    take = np.repeat(starts, kept) + np.where(j == 0, drawn_of, other)
    values = pc.list_flatten(texts).take(pa.array(take))
    text_type = WORLDWIDE_TEXT_TYPE if worldwide else TEXT_TYPE
    entries = pa.StructArray.from_arrays([values.field(f.name) for f in text_type], fields=list(text_type))
    return pa.ListArray.from_arrays(pa.array(first.astype(np.int32)), entries)


def write_selected(images_path: str, target: str, probabilities: np.ndarray, seed: int, space: EntrySpace) -> int:
    """select_images of one bucket's images file into `target`; how many were kept."""
    table = select_images(pq.read_table(images_path), probabilities, seed, space)
    write_parquet(target, table)
    return table.num_rows
