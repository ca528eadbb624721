"""The CRAWL dir: candidates, entry counts, the balanced selection, img2dataset's download
and `crawl.json`; and the check of a downloaded sample's json."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa

from wit.formats.atomic import read_json_object, write_parquet
from wit.formats.errors import WitError
from wit.formats.shards import MAX_TEXTS
from wit.formats.uids import is_uid

CANDIDATES, SELECTED, DOWNLOAD = "candidates", "selected", "download"
ROBOTS = "robots"   # robots/NNNNN.json: how download shard NNNNN's robots.txt fetches went
ENTRY_COUNTS, SUMMARY = "entry_counts.parquet", "crawl.json"
CANDIDATE_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                              ("query_ids", pa.list_(pa.int32()))])   # plus source columns
MAX_SAMPLE_JSON_BYTES = 1 << 20   # img2dataset's json of one sample is a few hundred bytes



def write_query_counts(path: str, counts: np.ndarray) -> None:
    """A unit's per-query counts (query_id, matched), the non-zero ones; a crawl sums
    them into ENTRY_COUNTS."""
    nonzero = np.flatnonzero(counts)
    write_parquet(path, pa.table({"query_id": nonzero.astype(np.int32), "matched": counts[nonzero]}))

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


def query_count(crawl_dir: str) -> int:
    """How many queries the crawl matched against (from `crawl.json`)."""
    summary = read_json_object(os.path.join(crawl_dir, SUMMARY), "crawl summary (run `wit crawl` first)")
    count = summary.get("queries")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise WitError(f"{os.path.join(crawl_dir, SUMMARY)}: no query count (\"queries\")")
    return count


def parse_sample_json(raw: bytes, queries: int) -> tuple[dict | None, str | None]:
    """The fields `wit shard` keeps from a downloaded sample's json (uid, url, query_ids,
    original_width, original_height, and texts, or None, in image-centric crawls), or None
    and why the sample must be dropped: `malformed_uid` (not exactly 32 lower-case hex
    digits) or `malformed_json` (also: texts that are not a list of at most MAX_TEXTS
    {text, query_ids} with a non-empty text)."""
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
    query_ids = meta.get("query_ids")
    query_ids = [] if query_ids is None else query_ids
    if not _query_ids(query_ids, queries):
        return None, "malformed_json"
    texts = meta.get("texts")
    if texts is not None and not (isinstance(texts, list) and 0 < len(texts) <= MAX_TEXTS and all(
            isinstance(t, dict) and isinstance(t.get("text"), str) and t["text"].strip()
            and _query_ids(t.get("query_ids"), queries) for t in texts)):
        return None, "malformed_json"
    url = meta.get("url")
    return {"uid": meta["uid"], "url": url if isinstance(url, str) else "",
            "query_ids": list(dict.fromkeys(query_ids)),
            "texts": None if texts is None else [{"text": t["text"], "query_ids": list(dict.fromkeys(t["query_ids"]))}
                                                 for t in texts],
            **{k: meta[k] if _is_int(meta.get(k)) and meta[k] > 0 else None
               for k in ("original_width", "original_height")}}, None


def _query_ids(values, queries: int) -> bool:
    return isinstance(values, list) and all(_is_int(q) and 0 <= q < queries for q in values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
