"""What a `wit filter` output says about the samples of its input: removed.parquet and
annotations.parquet, indexed by sample id in one SQLite file of the cache dir (built once
per FILTER dir, atomically), and the evaluation images decontamination matched (read from
the evaluation set that contamination.json names, once per set, only those matched)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from wit.formats.atomic import atomic_path
from wit.formats.errors import WitError
from wit.formats.evalsets import open_evalset
from wit.formats.images import ImageRefused
from wit.view.images import THUMBNAIL, resized_jpeg
from wit.view.index import Index, Page, ReadOnly, ids_page
from wit.view.sources import ANNOTATIONS, REMOVED, Filtered

VERSION = 1
DECONTAMINATE = "decontaminate"
UID_MATCHES = ("near_dup", "semantic_dedup")   # filters whose match is the kept twin's uid
_REMOVED_COLUMNS = ("uid", "filter", "reason", "match", "value")
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE removed(sample INTEGER PRIMARY KEY, filter TEXT NOT NULL, reason TEXT NOT NULL, match TEXT, value REAL);
CREATE TABLE removed_counts(filter TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
                            PRIMARY KEY(filter, reason)) WITHOUT ROWID;
CREATE TABLE annotations(sample INTEGER PRIMARY KEY, fields TEXT NOT NULL);
"""
_BATCH = 50_000


def build(filtered: Filtered, index: Index, cache: str) -> str:
    """The path of the FILTER dir's SQLite file in `cache`, built when missing."""
    path = os.path.join(cache, f"filtered-{filtered.manifest_sha256[:32]}.sqlite")
    if os.path.exists(path):
        return path
    with atomic_path(path) as temporary:
        removed, annotated = _build(filtered, index, temporary)
    print(f"wit view: {filtered.root}: {removed:,} removed samples, {annotated:,} annotated, indexed",
          file=sys.stderr, flush=True)
    return path


def _build(filtered: Filtered, index: Index, temporary: str) -> tuple[int, int]:
    """Fill the SQLite file `temporary`; the removed and annotated samples it holds."""
    conn = sqlite3.connect(temporary)
    try:
        conn.executescript(_SCHEMA)
        with conn:
            removed = _removed(conn, filtered.path(REMOVED), index)
            annotated = _annotations(conn, filtered.path(ANNOTATIONS), index)
            conn.execute("INSERT INTO removed_counts SELECT filter, reason, COUNT(*) FROM removed "
                         "GROUP BY filter, reason")
            conn.execute("CREATE INDEX removed_by ON removed(filter, reason, sample)")
            conn.execute("CREATE INDEX removed_match ON removed(match)")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [("tool", "wit view"), ("version", str(VERSION)),
                                                                ("filtered", filtered.root)])
    finally:
        conn.close()
    return removed, annotated


def _ids(index: Index, uids: list[str], path: str) -> list[int]:
    found: dict[str, int] = {}
    for start in range(0, len(uids), 500):
        part = uids[start:start + 500]
        found.update(index.all(f"SELECT uid, id FROM samples WHERE uid IN ({', '.join('?' * len(part))})",
                               tuple(part)))
    missing = next((u for u in uids if u not in found), None)
    if missing is not None:
        raise WitError(f"{path}: uid {missing!r} is not a sample of the SHARDS dir")
    return [found[u] for u in uids]


def _batches(path: str, columns: tuple[str, ...] | None = None):
    try:
        f = pq.ParquetFile(path)
        names = f.schema_arrow.names
        if columns and any(c not in names for c in columns):
            raise WitError(f"{path}: expected the columns {', '.join(columns)}")
        yield from f.iter_batches(batch_size=_BATCH, columns=list(columns) if columns else None)
    except (OSError, pa.ArrowInvalid) as e:
        raise WitError(f"{path}: unreadable ({e})") from None


def _removed(conn: sqlite3.Connection, path: str, index: Index) -> int:
    count = 0
    for batch in _batches(path, _REMOVED_COLUMNS):
        columns = batch.to_pydict()
        ids = _ids(index, columns["uid"], path)
        conn.executemany("INSERT INTO removed VALUES (?, ?, ?, ?, ?)",
                         zip(ids, columns["filter"], columns["reason"], columns["match"],
                             [None if v is None or not math.isfinite(v) else v for v in columns["value"]]))
        count += len(ids)
    return count


def _annotations(conn: sqlite3.Connection, path: str, index: Index) -> int:
    if not os.path.exists(path):
        return 0
    count = 0
    for batch in _batches(path):
        columns = batch.to_pydict()
        if "uid" not in columns:
            raise WitError(f"{path}: no uid column")
        ids = _ids(index, columns.pop("uid"), path)
        names = list(columns)
        rows = []
        for row, sample in enumerate(ids):
            fields = {name: columns[name][row] for name in names if columns[name][row] is not None}
            if fields:
                rows.append((sample, json.dumps(fields, ensure_ascii=False, default=str)))
        conn.executemany("INSERT INTO annotations VALUES (?, ?)", rows)
        count += len(rows)
    return count


class FilterIndex(ReadOnly):
    """Read-only queries on a FILTER dir's SQLite file."""

    def __init__(self, path: str, filtered: Filtered) -> None:
        super().__init__(path)
        self.filtered = filtered

    def counts(self) -> list[dict]:
        return [dict(r) for r in self.conn().execute(
            "SELECT filter, reason, n FROM removed_counts ORDER BY filter, n DESC, reason")]

    def count(self, filter_: str, reason: str) -> int | None:
        row = self.conn().execute("SELECT n FROM removed_counts WHERE filter = ? AND reason = ?",
                                  (filter_, reason)).fetchone()
        return row[0] if row else None

    def removal(self, sample: int) -> dict | None:
        row = self.conn().execute("SELECT * FROM removed WHERE sample = ?", (sample,)).fetchone()
        return dict(row) if row else None

    def removals(self, samples: list[int]) -> dict[int, dict]:
        if not samples:
            return {}
        rows = self.conn().execute(f"SELECT * FROM removed WHERE sample IN ({', '.join('?' * len(samples))})",
                                   tuple(samples))
        return {r["sample"]: dict(r) for r in rows}

    def annotations(self, sample: int) -> dict:
        row = self.conn().execute("SELECT fields FROM annotations WHERE sample = ?", (sample,)).fetchone()
        return json.loads(row[0]) if row else {}

    def removed_for(self, uid: str, limit: int = 24) -> list[dict]:
        """The samples removed as twins of the sample `uid` (their match is its uid)."""
        return [dict(r) for r in self.conn().execute(
            "SELECT * FROM removed WHERE match = ? ORDER BY sample LIMIT ?", (uid, limit))]

    def page(self, filter_: str, reason: str, after: int | None, before: int | None, limit: int) -> Page:
        return ids_page(self.conn(), "sample", "FROM removed WHERE filter = ? AND reason = ?", (filter_, reason),
                        after, before, limit)

    def eval_matches(self, name: str) -> set[int]:
        """The indices of the images of evaluation set `name` that removed a sample."""
        prefix = f"{name}:"
        found = set()
        for (match,) in self.conn().execute("SELECT DISTINCT match FROM removed WHERE filter = ? AND match >= ? "
                                            "AND match < ?", (DECONTAMINATE, prefix, f"{name};")):
            rest = match[len(prefix):]
            if rest.isdigit():
                found.add(int(rest))
        return found


def eval_match(match: str | None) -> tuple[str, int] | None:
    """(set name, image index) of a decontamination match `EVALSET:index`."""
    if not match:
        return None
    name, _, index = match.rpartition(":")
    return (name, int(index)) if name and index.isdigit() else None


class EvalImages:
    """Thumbnails of the evaluation images that decontamination matched: on the first
    request for a set, the set (where contamination.json says it lives) is read once and
    the thumbnails of its matched images kept; no other image of it is kept or served."""

    def __init__(self, filters: FilterIndex) -> None:
        self.filters = filters
        self.paths = {name: entry["path"] for name, entry in filters.filtered.contamination.items()
                      if isinstance(entry, dict) and isinstance(entry.get("path"), str)}
        self._sets: dict[str, dict[int, bytes]] = {}
        self.problems: dict[str, str] = {}
        self._lock = threading.Lock()

    def thumbnail(self, name: str, index: int) -> bytes | None:
        if name not in self.paths:
            return None
        with self._lock:
            if name not in self._sets:
                self._sets[name] = self._read(name)
            return self._sets[name].get(index)

    def _read(self, name: str) -> dict[int, bytes]:
        wanted = self.filters.eval_matches(name)
        found: dict[int, bytes] = {}
        if not wanted:   # no sample matched this set: nothing of it is shown, nothing read
            return found
        try:
            evalset = open_evalset(self.paths[name])
            for sample in evalset.samples(wanted.__contains__):
                try:
                    found[sample.index] = resized_jpeg(sample.image, THUMBNAIL)
                except ImageRefused:
                    continue
                if len(found) == len(wanted):
                    break
        except WitError as e:
            self.problems[name] = str(e)
            print(f"wit view: evaluation set {name}: {e}", file=sys.stderr, flush=True)
        return found
