"""The CRAWL dir: candidates, entry counts, the balanced selection, img2dataset's download
and `crawl.json`; and the check of a downloaded sample's json."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit.formats.atomic import read_json_object, write_parquet
from wit.formats.errors import WitError
from wit.formats.languages import OTHER
from wit.formats.queries import EntrySpace
from wit.formats.shards import MAX_TEXTS
from wit.formats.uids import is_uid

CANDIDATES, SELECTED, DOWNLOAD = "candidates", "selected", "download"
ROBOTS = "robots"   # robots/NNNNN.json: how download shard NNNNN's robots.txt fetches went
ENTRY_COUNTS, SUMMARY = "entry_counts.parquet", "crawl.json"
CANDIDATE_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                              ("query_ids", pa.list_(pa.int32()))])   # plus source columns
MAX_SAMPLE_JSON_BYTES = 1 << 20   # img2dataset's json of one sample is a few hundred bytes



def write_query_counts(path: str, counts: np.ndarray) -> None:
    """A unit's per-entry counts (query_id: the dense id, see EntrySpace; matched), the
    non-zero ones; a crawl sums them into ENTRY_COUNTS."""
    nonzero = np.flatnonzero(counts)
    write_parquet(path, pa.table({"query_id": nonzero.astype(np.int32), "matched": counts[nonzero]}))


def write_entry_counts(path: str, matched: np.ndarray, space: EntrySpace) -> None:
    """ENTRY_COUNTS: one row per entry, dense: query_id and matched, and for a worldwide
    list each entry's `lang`, `query_id` being its index in that language's list."""
    if not space.worldwide:
        write_parquet(path, pa.table({"query_id": pa.array(np.arange(len(matched), dtype=np.int32)),
                                      "matched": pa.array(matched)}))
        return
    position, index = space.index(np.arange(space.size, dtype=np.int64))
    langs = pa.DictionaryArray.from_arrays(pa.array(position.astype(np.int32)), pa.array(space.languages))
    write_parquet(path, pa.table({"lang": langs.cast(pa.string()), "query_id": pa.array(index.astype(np.int32)),
                                  "matched": pa.array(matched)}))


def read_entry_counts(path: str, space: EntrySpace) -> np.ndarray:
    """`matched` per dense id from ENTRY_COUNTS (as write_entry_counts writes it)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise WitError(f"{path}: unreadable entry counts ({e})") from None
    if "matched" not in table.column_names or "query_id" not in table.column_names:
        raise WitError(f"{path}: not entry counts (no query_id and matched columns)")
    if "lang" in table.column_names and space.worldwide:
        try:
            ids, _ = space.dense(pa.ListArray.from_arrays(pa.array(np.arange(table.num_rows + 1, dtype=np.int32)),
                                                          table["query_id"].combine_chunks()), table["lang"])
        except (ValueError, pa.ArrowException):
            raise WitError(f"{path}: entry counts of a language outside the query list") from None
    elif "lang" in table.column_names or space.worldwide:
        raise WitError(f"{path}: entry counts of a {'worldwide' if 'lang' in table.column_names else 'single'} "
                       "query list, but the crawl's list is not")
    else:
        ids = table["query_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= space.size):
        raise WitError(f"{path}: query ids outside the query list (of {space.size} entries)")
    matched = np.zeros(space.size, dtype=np.int64)
    np.add.at(matched, ids, table["matched"].to_numpy(zero_copy_only=False))
    return matched

# img2dataset's files of one download shard; it writes `NNNNN_stats.json` last, so a shard
# is finished when that file exists
SHARD_FILES = (".tar", ".parquet", "_stats.json")
STATS_SUFFIX = "_stats.json"


def finished_shards(download_dir: str) -> list[str]:
    """The ids (`NNNNN`) of the finished download shards in `download_dir`, sorted."""
    return _shard_ids(download_dir)[0]


def unfinished_shards(download_dir: str) -> list[str]:
    """The ids of the download shards with a tar but no stats file (a killed or failed
    download left them), sorted."""
    return _shard_ids(download_dir)[1]


def _shard_ids(download_dir: str) -> tuple[list[str], list[str]]:
    """(finished, unfinished) shard ids, from one listing of the dir."""
    names = os.listdir(download_dir) if os.path.isdir(download_dir) else []
    finished = {n[: -len(STATS_SUFFIX)] for n in names if n.endswith(STATS_SUFFIX)}
    return sorted(finished), sorted({n[: -len(".tar")] for n in names if n.endswith(".tar")} - finished)


def downloaded_tars(crawl_dir: str) -> list[str]:
    """The finished download shards of a CRAWL dir (`download/NNNNN.tar`), sorted."""
    download = os.path.join(crawl_dir, DOWNLOAD)
    return [os.path.join(download, f"{n}.tar") for n in finished_shards(download)]


def crawl_space(crawl_dir: str) -> EntrySpace:
    """The entries the crawl matched against (from `crawl.json`: `queries`, and for a
    worldwide list each language's list size under `languages`)."""
    path = os.path.join(crawl_dir, SUMMARY)
    summary = read_json_object(path, "crawl summary (run `wit crawl` first)")
    count = summary.get("queries")
    if not _is_int(count) or count < 1:
        raise WitError(f"{path}: no query count (\"queries\")")
    languages = summary.get("languages")
    if languages is None:
        return EntrySpace.single(count)
    sizes = {lang: entry.get("queries") if isinstance(entry, dict) else None
             for lang, entry in (languages.items() if isinstance(languages, dict) else []) if lang != OTHER}
    if not sizes or not all(_is_int(n) and n >= 0 for n in sizes.values()) or sum(sizes.values()) != count:
        raise WitError(f"{path}: \"languages\" does not give each language's list size (summing to {count})")
    return EntrySpace.from_record(dict(sorted(sizes.items())), count)


def parse_sample_json(raw: bytes, space: EntrySpace) -> tuple[dict | None, str | None]:
    """The fields `wit shard` keeps from a downloaded sample's json (uid, url, query_ids,
    original_width, original_height, lang (worldwide crawls, else None) and texts, or
    None, in image-centric crawls), or None and why the sample must be dropped:
    `malformed_uid` (not exactly 32 lower-case hex digits) or `malformed_json` (also:
    query ids outside the list, of a worldwide crawl's text outside its language's list;
    texts that are not a list of at most MAX_TEXTS {text, query_ids} with a non-empty text)."""
    if len(raw) > MAX_SAMPLE_JSON_BYTES:
        return None, "malformed_json"
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "malformed_json"
    if not isinstance(meta, dict):
        return None, "malformed_json"
    if not is_uid(meta.get("uid")):
        return None, "malformed_uid"
    sizes = dict(zip(space.languages, space.sizes)) if space.worldwide else None
    lang = meta.get("lang") if sizes is not None else None
    query_ids = meta.get("query_ids")
    query_ids = [] if query_ids is None else query_ids
    if not _query_ids(query_ids, _size(space, sizes, lang)):
        return None, "malformed_json"
    texts = meta.get("texts")
    if texts is not None and not (isinstance(texts, list) and 0 < len(texts) <= MAX_TEXTS and all(
            isinstance(t, dict) and isinstance(t.get("text"), str) and t["text"].strip()
            and _query_ids(t.get("query_ids"), _size(space, sizes, t.get("lang") if sizes else None))
            for t in texts)):
        return None, "malformed_json"
    url = meta.get("url")
    return {"uid": meta["uid"], "url": url if isinstance(url, str) else "",
            "query_ids": list(dict.fromkeys(query_ids)), "lang": lang,
            "texts": None if texts is None else [
                {"text": t["text"], "query_ids": list(dict.fromkeys(t["query_ids"])),
                 **({"lang": t["lang"]} if sizes is not None else {})} for t in texts],
            **{k: meta[k] if _is_int(meta.get(k)) and meta[k] > 0 else None
               for k in ("original_width", "original_height")}}, None


def _size(space: EntrySpace, sizes: dict[str, int] | None, lang) -> int:
    """How many ids a query id may take: the list's, or the language's (-1: no such language)."""
    if sizes is None:
        return space.size
    return sizes.get(lang, -1) if isinstance(lang, str) else -1


def _query_ids(values, queries: int) -> bool:
    return isinstance(values, list) and all(_is_int(q) and 0 <= q < queries for q in values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
