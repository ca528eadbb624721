"""The CRAWL dir: candidates, entry counts, the balanced selection, img2dataset's download
and `crawl.json`; and the check of a downloaded sample's json."""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa

from wit.formats.atomic import read_json_object
from wit.formats.errors import WitError
from wit.formats.uids import is_uid

CANDIDATES, SELECTED, DOWNLOAD = "candidates", "selected", "download"
ROBOTS = "robots"   # robots/NNNNN.json: how download shard NNNNN's robots.txt fetches went
ENTRY_COUNTS, SUMMARY = "entry_counts.parquet", "crawl.json"
CANDIDATE_SCHEMA = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                              ("query_ids", pa.list_(pa.int32()))])   # plus source columns
MAX_SAMPLE_JSON_BYTES = 1 << 20   # img2dataset's json of one sample is a few hundred bytes


def downloaded_tars(crawl_dir: str) -> list[str]:
    """The download shards of a CRAWL dir (`download/NNNNN.tar`), sorted."""
    return sorted(glob.glob(os.path.join(crawl_dir, DOWNLOAD, "*.tar")))


def query_count(crawl_dir: str) -> int:
    """How many queries the crawl matched against (from `crawl.json`)."""
    summary = read_json_object(os.path.join(crawl_dir, SUMMARY), "crawl summary (run `wit crawl` first)")
    count = summary.get("queries")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise WitError(f"{os.path.join(crawl_dir, SUMMARY)}: no query count (\"queries\")")
    return count


def parse_sample_json(raw: bytes, queries: int) -> tuple[dict | None, str | None]:
    """The fields `wit shard` keeps from a downloaded sample's json (uid, url, query_ids,
    original_width, original_height), or None and why the sample must be dropped:
    `malformed_uid` (not exactly 32 lower-case hex digits) or `malformed_json`."""
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
    if not isinstance(query_ids, list) or not all(_is_int(q) and 0 <= q < queries for q in query_ids):
        return None, "malformed_json"
    url = meta.get("url")
    return {"uid": meta["uid"], "url": url if isinstance(url, str) else "",
            "query_ids": list(dict.fromkeys(query_ids)),
            **{k: meta[k] if _is_int(meta.get(k)) and meta[k] > 0 else None
               for k in ("original_width", "original_height")}}, None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
