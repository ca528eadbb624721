"""The QUERIES dir: `queries.parquet` (one row per query), `metadata.json` (the queries as
a JSON list in query_id order, MetaCLIP's format) and `stats.json`; and reading a query
list in any of the formats users have (FORMATS)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit.formats.atomic import write_json, write_parquet
from wit.formats.errors import WitError
from wit.formats.text import SPACED_PUNCTUATION

TABLE, METADATA, STATS = "queries.parquet", "metadata.json", "stats.json"
SOURCES = ("unigram", "bigram", "title", "wordnet")
IMPORTED = "imported"   # the source of every query of an imported list (`wit build-queries --import`)
SCHEMA = pa.schema([
    ("query_id", pa.int32()),
    ("query", pa.string()),
    ("sources", pa.list_(pa.string())),
    ("count", pa.int64()),
    ("pmi", pa.float64()),
    ("views", pa.int64()),
])


FORMATS = ("a QUERIES dir (wit build-queries), a MetaCLIP metadata.json (a JSON list of strings) "
           "or a UTF-8 text file with one query per line")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SPACED = re.compile("[" + re.escape("".join(SPACED_PUNCTUATION)) + "]")


@dataclass(frozen=True)
class QueryList:
    queries: list[str]   # in query_id order
    sha256: str          # of the file they were read from
    path: str            # that file
    format: str          # "queries.parquet", "metadata.json" or "lines"


def write_queries(directory: str, rows: dict[str, list]) -> None:
    """queries.parquet and metadata.json from columns of SCHEMA (query_id is added)."""
    table = pa.table({"query_id": list(range(len(rows["query"]))), **rows}, schema=SCHEMA)
    write_parquet(os.path.join(directory, TABLE), table)
    write_json(os.path.join(directory, METADATA), rows["query"])


def read_queries(path: str) -> QueryList:
    """The query list at `path`, in any of FORMATS (a dir without queries.parquet but with
    MetaCLIP's metadata.json is read from that), its entries checked (`check_entries`)."""
    if os.path.isdir(path):
        for name in (TABLE, METADATA):
            if os.path.exists(os.path.join(path, name)):
                return read_queries(os.path.join(path, name))
        raise WitError(f"{path}: no query list in it (no {TABLE} or {METADATA}); give {FORMATS}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise WitError(f"{path}: no such query list; give {FORMATS}") from None
    except OSError as e:
        raise WitError(f"{path}: cannot read query list ({e})") from None
    if path.endswith(".parquet"):
        kind, queries = TABLE, _from_table(path)
    elif path.endswith(".json"):
        kind, queries = METADATA, _from_json(path, raw)
    else:
        kind, queries = "lines", _from_lines(path, raw)
    check_entries(path, queries)
    return QueryList(queries, hashlib.sha256(raw).hexdigest(), os.path.abspath(path), kind)


def _from_table(path: str) -> list[str]:
    try:
        table = pq.read_table(path, columns=["query_id", "query"])
    except (OSError, pa.ArrowException) as e:
        raise WitError(f"{path}: cannot read query list ({e}); give {FORMATS}") from None
    ids = table.column("query_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise WitError(f"{path}: query_id must run densely from 0")
    return table.column("query").to_pylist()


def _from_json(path: str, raw: bytes) -> list[str]:
    try:
        queries = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise WitError(f"{path}: not JSON ({e}); give {FORMATS}") from None
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise WitError(f"{path}: not a JSON list of strings (MetaCLIP's metadata.json); give {FORMATS}")
    return queries


def _from_lines(path: str, raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitError(f"{path}: not UTF-8 text (byte {e.start}); give {FORMATS}") from None
    if "\x00" in text:
        raise WitError(f"{path}: holds NUL bytes, not a text file; give {FORMATS}")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()   # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def check_entries(path: str, queries: list[str]) -> None:
    """Refuse the entries MetaCLIP's matcher treats in a way no user wants: an empty or
    all-space entry (" " + entry + " " would match every text with a run of spaces) and one
    with a control character (texts lose tabs and line breaks to spacing, so it never
    matches; NUL would clash with the batch separator). Duplicates are allowed: every id of
    a duplicated entry is matched, as MetaCLIP's loop does."""
    if not queries:
        raise WitError(f"{path}: the query list is empty")
    for query_id, query in enumerate(queries):
        if not query.strip(" "):
            raise WitError(f"{path}: entry {query_id} is {'empty' if not query else 'only spaces'}: MetaCLIP's "
                           "matcher would match it in every text with a run of spaces; remove it")
        control = _CONTROL.search(query)
        if control:
            raise WitError(f"{path}: entry {query_id} ({query!r}) holds the control character "
                           f"U+{ord(control.group()):04X}, which no spaced text contains; remove it")


def duplicates(queries: list[str]) -> list[list[int]]:
    """The ids of each entry that occurs more than once (all matched, as MetaCLIP does)."""
    ids: dict[str, list[int]] = {}
    for query_id, query in enumerate(queries):
        ids.setdefault(query, []).append(query_id)
    return [group for group in ids.values() if len(group) > 1]


def never_matching(queries: list[str]) -> list[int]:
    """Ids of entries that can match no text: MetaCLIP's spacing puts a space on both sides
    of each of `, . ; : ? ! `` ` ``, so an entry holding one without spaces around it (e.g.
    "U.S.") never occurs in a spaced text."""
    return [query_id for query_id, query in enumerate(queries)
            if any(_SPACED.search(word) and len(word) > 1 for word in query.split(" "))]


# ---- worldwide query lists (MetaCLIP 2) ----------------------------------------------------
# A directory of per-language lists in MetaCLIP 2's layout: `{lang}.json`, a JSON list of
# strings, one file per Wikipedia language code (`de`, `ja`, `zh_yue`, `simple`, ...). A
# query is (lang, its index in that file).

LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:_[a-z]+)*|simple")
WORLDWIDE_FORMAT = "a worldwide query list: a dir of {lang}.json files (MetaCLIP 2's layout)"


@dataclass(frozen=True)
class WorldwideQueries:
    lists: dict[str, QueryList]   # by language code, sorted
    path: str
    sha256: str                   # of the (language, list sha256) pairs: what a fingerprint records

    @property
    def query_count(self) -> int:
        return sum(len(q.queries) for q in self.lists.values())


def language_files(path: str) -> dict[str, str]:
    """The `{lang}.json` files of a dir, by language code (empty when it holds none)."""
    try:
        names = os.listdir(path)
    except OSError:
        return {}
    return {name[:-5]: os.path.join(path, name) for name in sorted(names)
            if name.endswith(".json") and LANGUAGE_CODE.fullmatch(name[:-5])}


def is_worldwide(path: str) -> bool:
    """A dir of `{lang}.json` files, without a single list (queries.parquet, metadata.json) in it."""
    return (os.path.isdir(path) and not any(os.path.exists(os.path.join(path, n)) for n in (TABLE, METADATA))
            and bool(language_files(path)))


def read_worldwide(path: str) -> WorldwideQueries:
    """Every per-language list of a worldwide dir, each checked like any list (`check_entries`)."""
    files = language_files(path)
    if not files:
        raise WitError(f"{path}: no {{lang}}.json file in it; give {WORLDWIDE_FORMAT}")
    lists = {lang: read_queries(file) for lang, file in files.items()}
    digest = hashlib.sha256(json.dumps([[lang, q.sha256] for lang, q in lists.items()]).encode()).hexdigest()
    return WorldwideQueries(lists, os.path.abspath(path), digest)


def write_worldwide(directory: str, lists: dict[str, list[str]]) -> None:
    """One `{lang}.json` per language (atomically, each), in MetaCLIP 2's layout."""
    for lang, queries in lists.items():
        if not LANGUAGE_CODE.fullmatch(lang):
            raise WitError(f"{lang!r}: not a Wikipedia language code (e.g. de, ja, zh_yue)")
        write_json(os.path.join(directory, f"{lang}.json"), queries)


@dataclass(frozen=True)
class EntrySpace:
    """The entries a crawl counts and balances, one dense id space: a single list's ids, or
    a worldwide list's languages one after the other (sorted by code), entry i of language
    L at `offset(L) + i`. Files hold (lang, index); the dense id is what counts are indexed
    by and what the balancing draws hash."""

    languages: tuple[str, ...] = ()   # () for a single list
    sizes: tuple[int, ...] = ()

    @classmethod
    def single(cls, size: int) -> "EntrySpace":
        return cls((), (size,))

    @classmethod
    def of(cls, queries: "QueryList | WorldwideQueries") -> "EntrySpace":
        if isinstance(queries, WorldwideQueries):
            return cls(tuple(queries.lists), tuple(len(q.queries) for q in queries.lists.values()))
        return cls.single(len(queries.queries))

    @property
    def worldwide(self) -> bool:
        return bool(self.languages)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def offsets(self) -> dict[str, int]:
        starts = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])
        return dict(zip(self.languages, (int(s) for s in starts)))

    def slices(self) -> dict[str, slice]:
        """Each language's ids in the dense space."""
        return {lang: slice(start, start + size)
                for (lang, start), size in zip(self.offsets.items(), self.sizes)}

    def dense(self, query_ids: pa.Array | pa.ChunkedArray, langs: pa.Array | pa.ChunkedArray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The dense ids of list-of-index `query_ids` (row i's indexes in language langs[i]),
        flattened, with each one's row."""
        lists = query_ids.combine_chunks() if isinstance(query_ids, pa.ChunkedArray) else query_ids
        flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        if not self.worldwide:
            return flat, parents
        if langs is None:
            raise ValueError("a worldwide entry space needs each row's language")
        starts = np.array([*self.offsets.values(), -1], dtype=np.int64)   # -1: a row in no listed language
        codes = pc.index_in(langs, pa.array(self.languages, pa.string())).fill_null(len(self.languages))
        codes = codes.to_numpy(zero_copy_only=False)[parents]
        sizes = np.array([*self.sizes, 0], dtype=np.int64)
        if len(flat) and ((flat < 0) | (flat >= sizes[codes])).any():
            raise ValueError("query ids outside their language's list")
        return flat + starts[codes], parents

    def index(self, dense_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(language position in `languages`, index in its list) of dense ids."""
        starts = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])
        position = np.searchsorted(starts, dense_ids, side="right") - 1
        return position, dense_ids - starts[position]

    def record(self) -> dict[str, int]:
        """What a summary records: each language's list size (a worldwide space only)."""
        return dict(zip(self.languages, self.sizes))

    @classmethod
    def from_record(cls, languages: dict[str, int] | None, size: int) -> "EntrySpace":
        return cls(tuple(languages), tuple(languages.values())) if languages else cls.single(size)


def read_query_list(path: str) -> "QueryList | WorldwideQueries":
    """A single list in any of FORMATS, or a worldwide dir of `{lang}.json` files."""
    return read_worldwide(path) if is_worldwide(path) else read_queries(path)
