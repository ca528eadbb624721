"""Candidate (image url, text) pools, read partition by partition in bounded batches.

Two kinds of source share one interface (`plan_partitions` then `read_partition`):
- tables: Parquet, CSV/TSV or JSONL files (optionally .gz), local paths or fsspec urls,
  with a url column and one or more text columns (a candidate per non-empty text of a
  row, a text repeated in a later column of the same row dropped); a Parquet file is
  split by row groups;
- Common Crawl WAT files (`*.warc.wat.gz`, read by wat.py): every `IMG@/src` link of an
  HTML page gives a candidate per distinct non-empty text among its attributes
  `text_attrs` (alt; MetaCLIP 2 also title and data-image-title); a record that cannot be
  parsed, or a truncated end, is skipped and counted.
Batches are Arrow tables with columns url, text, text_attr (the column or attribute the
text came from), source_file (and page_url for WAT, lang for a table with a language
column).
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from wit.crawl.wat import WatCounts, image_links
from wit.formats.errors import WitError

TABLE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
TEXT_ATTRS = ("alt", "title", "data-image-title")   # MetaCLIP 2's texts of an image link


@dataclass(frozen=True)
class Partition:
    """A piece of the pool one worker reads: a file, or some row groups of a Parquet file."""

    partition_id: str
    path: str
    kind: str  # a TABLE_FORMATS value, or "wat"
    row_groups: tuple[int, ...] | None = None


@dataclass
class SourceStats:
    """Counts a reader keeps while it reads (WAT records, skipped rows)."""

    records: int = 0
    corrupt_records: int = 0
    missing_url_or_text: int = 0


@dataclass(frozen=True)
class TableColumns:
    """The columns of a table source, or the link attributes of a WAT source, to read."""

    url: str = "url"
    texts: tuple[str, ...] = ("text",)
    text_attrs: tuple[str, ...] = ("alt",)
    lang: str = ""   # a column with each row's language (worldwide lists), read as `lang`


def table_format(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    fmt = TABLE_FORMATS.get(os.path.splitext(name)[1].lower())
    if fmt is None:
        raise WitError(f"{path}: unknown candidate format (expected {', '.join(TABLE_FORMATS)}, optionally .gz)")
    return fmt


def plan_partitions(files: list[str], wat: bool, columns: TableColumns,
                    rows_per_partition: int) -> list[Partition]:
    """Partitions of every file, checked for readability and for the url/text columns."""
    partitions: list[Partition] = []
    for file_index, path in enumerate(files):
        if wat:
            partitions.append(Partition(f"{file_index:05d}-00000", path, "wat"))
            continue
        fmt = table_format(path)
        names = _column_names(path, fmt)
        wanted = (columns.url, *columns.texts, *([columns.lang] if columns.lang else []))
        missing = [c for c in wanted if c not in names]
        if missing:
            raise WitError(f"{path}: no column {', '.join(map(repr, missing))} "
                           f"(columns: {', '.join(names)}; see --url-col/--text-col/--lang-col)")
        groups = _row_group_ranges(path, rows_per_partition) if fmt == "parquet" else [None]
        partitions += [Partition(f"{file_index:05d}-{i:05d}", path, fmt, g) for i, g in enumerate(groups)]
    return partitions


def _open(path: str, mode: str = "rb"):
    return fsspec.open(path, mode, compression="infer")


def _column_names(path: str, fmt: str) -> list[str]:
    try:
        if fmt == "parquet":
            with fsspec.open(path, "rb") as f:
                return pq.ParquetFile(f).schema_arrow.names
        with _open(path) as f:
            first = f.readline()
        if fmt == "jsonl":
            return list(json.loads(first)) if first.strip() else []
        delimiter = "\t" if fmt == "tsv" else ","
        return pa_csv.read_csv(io.BytesIO(first), parse_options=pa_csv.ParseOptions(delimiter=delimiter)).column_names
    except (OSError, ValueError, pa.ArrowException, EOFError) as e:
        raise WitError(f"{path}: cannot read candidate file ({e})") from None


def _row_group_ranges(path: str, rows: int) -> list[tuple[int, ...]]:
    with fsspec.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
    ranges, current, size = [], [], 0
    for group in range(meta.num_row_groups):
        current.append(group)
        size += meta.row_group(group).num_rows
        if size >= rows:
            ranges.append(tuple(current))
            current, size = [], 0
    return ranges + [tuple(current)] if current or not ranges else ranges


def read_partition(partition: Partition, columns: TableColumns, batch_rows: int,
                   stats: SourceStats) -> Iterator[pa.Table]:
    """Batches of at most `batch_rows` candidates with non-empty url and text."""
    try:
        reader = _read_wat if partition.kind == "wat" else _read_table
        for batch in reader(partition, columns, batch_rows, stats):
            yield _drop_empty(batch, stats)
    except (OSError, ValueError, pa.ArrowException, EOFError) as e:
        raise WitError(f"{partition.path}: cannot read candidate file ({e})") from None


def _drop_empty(batch: pa.Table, stats: SourceStats) -> pa.Table:
    ok = pc.and_(pc.fill_null(pc.greater(pc.utf8_length(batch["url"]), 0), False),
                 pc.fill_null(pc.greater(pc.utf8_length(batch["text"]), 0), False))
    kept = batch.filter(ok)
    stats.missing_url_or_text += batch.num_rows - kept.num_rows
    return kept


def _with_source(table: pa.Table, columns: TableColumns, path: str) -> pa.Table:
    """A candidate per (row, text column), the text column's rows after the previous ones';
    a text equal to one of an earlier column of its row is dropped."""
    url = pc.cast(table[columns.url], pa.string())
    texts = [pc.cast(table[c], pa.string()) for c in columns.texts]
    parts = []
    for i, (column, text) in enumerate(zip(columns.texts, texts)):
        part = pa.table({"url": url, "text": text, "text_attr": pa.array([column] * table.num_rows, pa.string()),
                         "source_file": pa.array([path] * table.num_rows, pa.string()),
                         **({"lang": pc.cast(table[columns.lang], pa.string())} if columns.lang else {})})
        if i:
            repeated = [pc.fill_null(pc.equal(text, earlier), False) for earlier in texts[:i]]
            part = part.filter(pc.invert(functools.reduce(pc.or_, repeated)))
        parts.append(part)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _read_table(partition: Partition, columns: TableColumns, batch_rows: int,
                stats: SourceStats) -> Iterator[pa.Table]:
    wanted = list(dict.fromkeys([columns.url, *columns.texts, *([columns.lang] if columns.lang else [])]))
    if partition.kind == "parquet":
        with fsspec.open(partition.path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_rows, row_groups=partition.row_groups,
                                                         columns=wanted):
                yield _with_source(pa.Table.from_batches([batch]), columns, partition.path)
        return
    with _open(partition.path) as f:
        if partition.kind == "jsonl":
            for block in _line_blocks(f, batch_rows):
                schema = pa.schema([(c, pa.string()) for c in wanted])
                table = pa_json.read_json(io.BytesIO(block), parse_options=pa_json.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore"))
                yield _with_source(table, columns, partition.path)
            return
        reader = pa_csv.open_csv(
            f,
            read_options=pa_csv.ReadOptions(block_size=1 << 22),
            parse_options=pa_csv.ParseOptions(delimiter="\t" if partition.kind == "tsv" else ","),
            convert_options=pa_csv.ConvertOptions(include_columns=wanted,
                                                  column_types={c: pa.string() for c in wanted}),
        )
        for batch in reader:
            yield _with_source(pa.Table.from_batches([batch]), columns, partition.path)


def _line_blocks(f, lines: int) -> Iterator[bytes]:
    block: list[bytes] = []
    for line in f:
        if line.strip():
            block.append(line if line.endswith(b"\n") else line + b"\n")
        if len(block) == lines:
            yield b"".join(block)
            block = []
    if block:
        yield b"".join(block)


def _read_wat(partition: Partition, columns: TableColumns, batch_rows: int,
              stats: SourceStats) -> Iterator[pa.Table]:
    counts = WatCounts()
    with fsspec.open(partition.path, "rb") as f:
        for table in image_links(f, columns.text_attrs, counts, batch_rows):
            source = pa.repeat(pa.scalar(partition.path, pa.string()), table.num_rows)
            yield table.add_column(3, "source_file", source)
    stats.records += counts.records
    stats.corrupt_records += counts.corrupt_records
