"""The index of a SHARDS dir: one SQLite file in a cache dir outside it, what every page of
`wit view` is answered from, so that no request reads more than the members it shows.

Per sample: its id (its position in the dir: the samples of the shards before it in the
manifest, plus its place in its shard; so also its row in an EMBED dir), uid, shard and
key, where its image, json and txt members lie in the tar (offset, size), its caption,
language, query ids and size. Per (language, query) and per language the samples that have
it, and their counts; the captions in an FTS5 table.

Built once, resumably: one shard is one transaction (its samples, their queries, their
captions, the counts, and the shard's row in `shards`), so a killed build keeps the shards
it finished and the next start does only the others. Shards are read in worker processes
(`index_shard`, a pure function of the tar), written by the leader (`store_shard`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from wit.formats.crawl import MAX_SAMPLE_JSON_BYTES
from wit.formats.errors import WitError
from wit.formats.languages import LANGUAGE_CODE
from wit.formats.shards import open_regular
from wit.formats.tars import Member, image_extension, read_member, scan_tar
from wit.formats.uids import is_uid

VERSION = 1
INDEX_FILE = "index.sqlite"
MAX_CAPTION = 10_000        # characters of a caption kept in the index (the sample page reads the member)
MAX_QUERY_IDS = 256         # query ids of one sample kept in the index
_SAMPLE_COLUMNS = ("id", "uid", "shard", "key", "image_ext", "image_offset", "image_size", "json_offset",
                   "json_size", "txt_offset", "txt_size", "caption", "lang", "width", "height")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards(shard INTEGER PRIMARY KEY, name TEXT NOT NULL, first INTEGER NOT NULL,
                                  samples INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples(
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL, shard INTEGER NOT NULL, key TEXT NOT NULL,
    image_ext TEXT, image_offset INTEGER, image_size INTEGER, json_offset INTEGER, json_size INTEGER,
    txt_offset INTEGER, txt_size INTEGER, caption TEXT NOT NULL, lang TEXT NOT NULL, width INTEGER, height INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS samples_uid ON samples(uid);
CREATE TABLE IF NOT EXISTS sample_queries(lang TEXT NOT NULL, query_id INTEGER NOT NULL, sample INTEGER NOT NULL,
                                          PRIMARY KEY(lang, query_id, sample)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS query_counts(lang TEXT NOT NULL, query_id INTEGER NOT NULL, n INTEGER NOT NULL,
                                        PRIMARY KEY(lang, query_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lang_counts(lang TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS captions USING fts5(caption, content='samples', content_rowid='id');
"""
# made once every shard is in (cheaper in one go than kept up to date row by row)
_FINAL = """
CREATE INDEX IF NOT EXISTS samples_lang ON samples(lang, id);
CREATE INDEX IF NOT EXISTS query_counts_n ON query_counts(n DESC, lang, query_id);
"""


@dataclass
class ShardRows:
    """What one shard adds to the index: rows of `samples` (in _SAMPLE_COLUMNS order) and of
    `sample_queries` (lang, query_id, sample id)."""
    shard: int
    name: str
    first: int
    samples: list[tuple] = field(default_factory=list)
    queries: list[tuple] = field(default_factory=list)


def index_shard(path: str, shard: int, name: str, first: int, expected: dict) -> ShardRows:
    """The index rows of one shard (a worker task): its samples numbered from `first`. The
    tar must be a regular file of the size and sample count its manifest entry gives (a
    one-line WitError naming it otherwise); a sample's json and txt are read, its image is not."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size != expected["bytes"]:
            raise WitError(f"{path}: {size:,} bytes, the manifest says {expected['bytes']:,} "
                           "(changed since `wit shard` wrote it?)")
        scan = scan_tar(path)
        if scan.error:
            raise WitError(f"{path}: unreadable shard ({scan.error})")
        if len(scan.samples) != expected["samples"]:
            raise WitError(f"{path}: {len(scan.samples):,} samples, the manifest says {expected['samples']:,}")
        rows = ShardRows(shard, name, first)
        for position, (key, members) in enumerate(scan.samples):
            sample = first + position
            meta = _json(f, members.get("json"))
            lang = meta.get("lang")
            lang = lang if isinstance(lang, str) and LANGUAGE_CODE.fullmatch(lang) else ""
            uid = meta.get("uid")
            uid = uid if is_uid(uid) else key
            extension = image_extension(members)
            image, js, txt = members.get(extension) if extension else None, members.get("json"), members.get("txt")
            rows.samples.append((
                sample, uid, shard, key, extension, *_where(image), *_where(js), *_where(txt),
                _caption(f, txt), lang, _positive(meta.get("width")), _positive(meta.get("height"))))
            rows.queries += [(lang, q, sample) for q in dict.fromkeys(query_ids(meta))]
    return rows


def query_ids(meta: dict | None) -> list[int]:
    """The query ids a sample json lists (non-negative integers), at most MAX_QUERY_IDS."""
    found = (meta or {}).get("query_ids")
    if not isinstance(found, list):
        return []
    return [q for q in found if isinstance(q, int) and not isinstance(q, bool) and q >= 0][:MAX_QUERY_IDS]


def _where(member: Member | None) -> tuple[int | None, int | None]:
    return (member.offset, member.size) if member is not None else (None, None)


def _positive(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _json(f, member: Member | None) -> dict:
    if member is None or member.size > MAX_SAMPLE_JSON_BYTES:
        return {}
    try:
        meta = json.loads(read_member(f, member))
    except (ValueError, RecursionError, EOFError, OSError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _caption(f, member: Member | None) -> str:
    if member is None:
        return ""
    try:
        data = read_member(f, Member(member.name, member.offset, min(member.size, 4 * MAX_CAPTION)))
    except (EOFError, OSError):
        return ""
    return data.decode("utf-8", "replace")[:MAX_CAPTION]


def store_shard(conn: sqlite3.Connection, rows: ShardRows, path: str) -> None:
    """Add one shard's rows to the index in one transaction, the shard marked done with them."""
    queries = Counter((lang, q) for lang, q, _ in rows.queries)
    languages = Counter(row[12] for row in rows.samples)
    last = rows.first + len(rows.samples)
    try:
        with conn:
            conn.executemany(f"INSERT INTO samples VALUES ({', '.join('?' * len(_SAMPLE_COLUMNS))})", rows.samples)
            conn.executemany("INSERT INTO sample_queries VALUES (?, ?, ?)", rows.queries)
            conn.execute("INSERT INTO captions(rowid, caption) SELECT id, caption FROM samples "
                         "WHERE id >= ? AND id < ?", (rows.first, last))
            conn.executemany("INSERT INTO query_counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                             [(lang, q, n) for (lang, q), n in queries.items()])
            conn.executemany("INSERT INTO lang_counts VALUES (?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                             list(languages.items()))
            conn.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", (rows.shard, rows.name, rows.first,
                                                                     len(rows.samples)))
    except sqlite3.IntegrityError:
        uids = [row[1] for row in rows.samples]
        twice = next((u for u, n in Counter(uids).items() if n > 1), None) or next(
            (u for u in uids if conn.execute("SELECT 1 FROM samples WHERE uid = ?", (u,)).fetchone()), None)
        what = f"uid {twice} is in the SHARDS dir twice" if twice else "its samples overlap another shard's"
        raise WitError(f"{path}: {what} (not a `wit shard` output?)") from None


# ---- building ------------------------------------------------------------------------------


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def open_for_build(path: str, identity: dict[str, str]) -> sqlite3.Connection:
    """The index at `path`, created if new; an index of another SHARDS dir (or version of it)
    is a one-line error, an index of an older layout is rebuilt."""
    exists = os.path.exists(path)
    if exists:
        found = _meta(path)
        if found is None:
            raise WitError(f"{path}: not an index of `wit view` (give --index another directory)")
        if found.get("version") != str(VERSION):
            os.remove(path)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        elif {k: found.get(k) for k in identity} != identity:
            raise WitError(f"{path}: the index of another SHARDS dir ({found.get('shards_dir')}, manifest sha256 "
                           f"{str(found.get('manifest_sha256'))[:12]}...); give --index another directory")
    conn = connect(path)
    conn.executescript(_SCHEMA)
    with conn:
        conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                         [("tool", "wit view"), ("version", str(VERSION)), *identity.items()])
    return conn


def _meta(path: str) -> dict[str, str] | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    # an empty meta table: a creation killed between the schema and its first rows (rebuilt)
    return found if found.get("tool") == "wit view" or not found else None


@dataclass
class BuildReport:
    samples: int
    shards: int
    built: int          # shards indexed by this call
    seconds: float


def build(shards_dir: str, manifest: dict, path: str, identity: dict[str, str], workers: int = 1,
          progress: Callable[[int, int, int], None] | None = None, pool_factory=None) -> BuildReport:
    """Build (or finish, or confirm) the index of a SHARDS dir at `path`. `progress(done,
    total, samples)` is called after each shard; `pool_factory(workers)` gives the worker
    pool (wit.formats.processes.worker_pool) when more than one shard is left."""
    started = time.time()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn = open_for_build(path, identity)
    try:
        done = {shard for (shard,) in conn.execute("SELECT shard FROM shards")}
        firsts, first = [], 0
        for entry in manifest["shards"]:
            firsts.append(first)
            first += entry["samples"]
        pending = [(os.path.join(shards_dir, e["name"]), i, e["name"], firsts[i], e)
                   for i, e in enumerate(manifest["shards"]) if i not in done]
        total, count = len(manifest["shards"]), len(done)
        samples = conn.execute("SELECT COALESCE(SUM(samples), 0) FROM shards").fetchone()[0]
        if progress:
            progress(count, total, samples)   # where it starts
        for path_, rows in _indexed(pending, workers, pool_factory):
            store_shard(conn, rows, path_)
            count += 1
            samples += len(rows.samples)
            if progress:
                progress(count, total, samples)
        conn.executescript(_FINAL)
        with conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")
        return BuildReport(samples, total, len(pending), time.time() - started)
    finally:
        conn.close()


def _indexed(pending: list[tuple], workers: int, pool_factory) -> Iterable[tuple[str, ShardRows]]:
    if workers <= 1 or len(pending) <= 1 or pool_factory is None:
        for args in pending:
            yield args[0], index_shard(*args)
        return
    with pool_factory(workers) as pool:
        futures = [(args[0], pool.submit(index_shard, *args)) for args in pending[:2 * workers]]
        queued = pending[2 * workers:]
        while futures:   # in order, at most 2 x workers shards read ahead
            path, future = futures.pop(0)
            rows = future.result()
            if queued:
                args = queued.pop(0)
                futures.append((args[0], pool.submit(index_shard, *args)))
            yield path, rows


class Progress:
    """Index progress on stderr, a line every few seconds."""

    def __init__(self, prefix: str, every: float = 2.0) -> None:
        self.prefix, self.every = prefix, every
        self.started = self.last = time.time()
        self.first_samples: int | None = None

    def __call__(self, done: int, total: int, samples: int) -> None:
        now = time.time()
        if self.first_samples is None:   # the first call: where the build starts
            self.first_samples = samples
            return
        if now - self.last < self.every and done < total:
            return
        self.last = now
        rate = (samples - self.first_samples) / max(now - self.started, 1e-9)
        print(f"{self.prefix}: indexed {done:,}/{total:,} shards, {samples:,} samples ({rate:,.0f} samples/s)",
              file=sys.stderr, flush=True)


# ---- reading -------------------------------------------------------------------------------


@dataclass
class Page:
    """One page of a listing: its rows in order, and the keys of the pages around it (None:
    no such page)."""
    rows: list[dict]
    after: int | None      # the `after` of the next page
    before: int | None     # the `before` of the previous page


class ReadOnly:
    """A SQLite file read by the pages: one read-only connection per request thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA mmap_size=268435456")
            self._local.conn = conn
        return conn


class Index(ReadOnly):
    """Read-only queries on a finished index."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        found = _meta(path)
        if not found or found.get("complete") != "1":
            raise WitError(f"{path}: not a finished index of `wit view`")
        self.meta = found

    def one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        return self.conn().execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, params).fetchall()

    # -- summary
    def totals(self) -> dict:
        return {"samples": self.one("SELECT COALESCE(SUM(samples), 0) FROM shards")[0],
                "shards": self.one("SELECT COUNT(*) FROM shards")[0],
                "languages": self.one("SELECT COUNT(*) FROM lang_counts WHERE lang != ''")[0],
                "queries": self.one("SELECT COUNT(*) FROM query_counts")[0]}

    def languages(self) -> list[dict]:
        return [dict(r) for r in self.all("SELECT lang, n FROM lang_counts ORDER BY n DESC, lang")]

    def language_count(self, lang: str) -> int | None:
        row = self.one("SELECT n FROM lang_counts WHERE lang = ?", (lang,))
        return row[0] if row else None

    def queries(self, offset: int, limit: int, lang: str | None = None) -> list[dict]:
        """(lang, query_id, n) by count, most first."""
        if lang is None:
            rows = self.all("SELECT lang, query_id, n FROM query_counts ORDER BY n DESC, lang, query_id "
                            "LIMIT ? OFFSET ?", (limit, offset))
        else:
            rows = self.all("SELECT lang, query_id, n FROM query_counts WHERE lang = ? "
                            "ORDER BY n DESC, query_id LIMIT ? OFFSET ?", (lang, limit, offset))
        return [dict(r) for r in rows]

    def query_count(self, lang: str, query_id: int) -> int | None:
        row = self.one("SELECT n FROM query_counts WHERE lang = ? AND query_id = ?", (lang, query_id))
        return row[0] if row else None

    # -- samples
    def sample(self, uid: str) -> dict | None:
        row = self.one("SELECT * FROM samples WHERE uid = ?", (uid,))
        return dict(row) if row else None

    def samples(self, ids: list[int]) -> list[dict]:
        """The samples of these ids, in that order (unknown ids left out)."""
        if not ids:
            return []
        found = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for row in self.all(f"SELECT * FROM samples WHERE id IN ({', '.join('?' * len(part))})", tuple(part)):
                found[row["id"]] = dict(row)
        return [found[i] for i in ids if i in found]

    def shard_keys(self, shard: int) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self.all("SELECT id, key FROM samples WHERE shard = ? ORDER BY id", (shard,))]

    def shard_name(self, shard: int) -> str | None:
        row = self.one("SELECT name FROM shards WHERE shard = ?", (shard,))
        return row[0] if row else None

    # -- listings, by keyset paging on the sample id
    def page(self, kind: str, value, after: int | None, before: int | None, limit: int) -> Page:
        """A page of the samples of a listing: `all`, `lang` (value: the language), `query`
        (value: (lang, query_id)) or `caption` (value: an FTS5 query), after or before a
        sample id."""
        key, base, params = _LISTINGS[kind](value)
        ids = ids_page(self.conn(), key, base, params, after, before, limit)
        return Page(self.samples(ids.rows), ids.after, ids.before)


def ids_page(conn: sqlite3.Connection, key: str, base: str, params: tuple, after: int | None,
             before: int | None, limit: int) -> Page:
    """A page of the ids `SELECT key base` gives, with keyset paging on `key`: the `limit`
    ids after `after` (or before `before`), and the keys of the pages around them."""
    select = f"SELECT {key} {base}"
    if before is not None:
        rows = [r[0] for r in conn.execute(f"{select} AND {key} < ? ORDER BY {key} DESC LIMIT ?",
                                           (*params, before, limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit][::-1]
        return Page(rows, rows[-1] if rows else None, rows[0] if more and rows else None)
    rows = [r[0] for r in conn.execute(f"{select} AND {key} > ? ORDER BY {key} LIMIT ?",
                                       (*params, -1 if after is None else after, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    earlier = after is not None and bool(rows) and conn.execute(
        f"{select} AND {key} <= ? LIMIT 1", (*params, after)).fetchone() is not None
    return Page(rows, rows[-1] if more else None, rows[0] if earlier else None)


# listing -> (key column, FROM ... WHERE ..., parameters)
_LISTINGS: dict[str, Callable] = {
    "all": lambda _: ("id", "FROM samples WHERE 1", ()),
    "lang": lambda lang: ("id", "FROM samples WHERE lang = ?", (lang,)),
    "query": lambda q: ("sample", "FROM sample_queries WHERE lang = ? AND query_id = ?", tuple(q)),
    "caption": lambda text: ("rowid", "FROM captions WHERE captions MATCH ?", (text,)),
}


def fts_query(text: str) -> str | None:
    """The user's words as an FTS5 query that cannot be a syntax error: each word a quoted
    phrase, all of them required (None for no words)."""
    words = text.split()[:16]
    return " ".join('"' + w.replace('"', '""') + '"' for w in words) or None
