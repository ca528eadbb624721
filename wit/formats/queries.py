"""The QUERIES dir: `queries.parquet` (one row per query), `metadata.json` (the queries as
a JSON list in query_id order, MetaCLIP's format) and `stats.json`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit.formats.atomic import write_json, write_parquet
from wit.formats.errors import WitError

TABLE, METADATA, STATS = "queries.parquet", "metadata.json", "stats.json"
SOURCES = ("unigram", "bigram", "title", "wordnet")
SCHEMA = pa.schema([
    ("query_id", pa.int32()),
    ("query", pa.string()),
    ("sources", pa.list_(pa.string())),
    ("count", pa.int64()),
    ("pmi", pa.float64()),
    ("views", pa.int64()),
])


@dataclass(frozen=True)
class QueryList:
    queries: list[str]   # in query_id order
    sha256: str          # of queries.parquet


def write_queries(directory: str, rows: dict[str, list]) -> None:
    """queries.parquet and metadata.json from columns of SCHEMA (query_id is added)."""
    table = pa.table({"query_id": list(range(len(rows["query"]))), **rows}, schema=SCHEMA)
    write_parquet(os.path.join(directory, TABLE), table)
    write_json(os.path.join(directory, METADATA), rows["query"])


def read_queries(directory: str) -> QueryList:
    """The queries of a QUERIES dir, checked: query_id dense from 0, no empty list."""
    path = os.path.join(directory, TABLE)
    try:
        table = pq.read_table(path, columns=["query_id", "query"])
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise WitError(f"{path}: no query list (run `wit build-queries` first)") from None
    except (OSError, pa.ArrowException) as e:
        raise WitError(f"{path}: cannot read query list ({e})") from None
    if table.num_rows == 0:
        raise WitError(f"{path}: the query list is empty")
    ids = table.column("query_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise WitError(f"{path}: query_id must run densely from 0")
    return QueryList(table.column("query").to_pylist(), digest)
