"""`wit crawl --retry-failed`: download again the samples of a finished crawl whose last
attempt failed for a transient reason (timeout, connection, 429, 5xx).

The crawl is revised as a whole (`claim(..., revise=True)`): its build dir starts as a
hard-link copy, the retried samples are downloaded into scratch with shard numbers after
the existing ones, moved into `download/`, and the revised dir replaces the old one in one
step. So `wit shard` sees the download before the retry or after it, never a part of it;
the shards that were there are never touched. `crawl.json` gets one `retries` entry per
round with the counts before and after.
"""

from __future__ import annotations

import logging
import os
import time

from wit.crawl.config import CrawlConfig
from wit.crawl.img2dataset_download import (TRANSIENT_REASONS, done_shards, download, download_summary,
                                            sample_columns, write_retry_selection)
from wit.formats.atomic import read_json, write_json
from wit.formats.crawl import ROBOTS, DOWNLOAD, SUMMARY
from wit.formats.workdir import WorkDir

log = logging.getLogger("wit.crawl")


def retry_failed(config: CrawlConfig, work: WorkDir) -> dict:
    """One retry round on the crawl in `work` (a revision); the new summary."""
    started = time.time()
    summary = read_json(work.path(SUMMARY))
    rounds = summary.get("retries", [])
    unit = f"retry-{len(rounds) + 1}"
    download_dir, counters_dir = work.path(DOWNLOAD), work.path(ROBOTS)
    retried_from = rounds[0]["first_shard"] if rounds else None
    selection, fetched = work.scratch(unit, "selected"), work.scratch(unit, "download")
    progress = work.done(unit)
    if progress is None:
        first_shard = max(done_shards(download_dir), default=-1) + 1
        os.makedirs(selection, exist_ok=True)
        retried = write_retry_selection(download_dir, retried_from, os.path.join(selection, "0.parquet"),
                                        sample_columns(config))
        if retried:
            log.info("retrying %d samples whose last attempt failed (%s)", retried, ", ".join(TRANSIENT_REASONS))
            download(config, selection, fetched, counters_dir, first_shard)
        progress = {"retried": retried, "first_shard": first_shard, "before": _brief(summary["download"])}
        work.mark_done(unit, progress)
    if not progress["retried"]:
        log.info("no sample failed for a transient reason: nothing to retry")
        return summary
    if os.path.isdir(fetched):   # moved after the unit is marked, so a kill here resumes the move
        for name in sorted(os.listdir(fetched)):
            os.replace(os.path.join(fetched, name), os.path.join(download_dir, name))
    after = download_summary(download_dir, counters_dir, rounds[0]["first_shard"] if rounds else progress["first_shard"])
    summary["retries"] = rounds + [{
        "round": len(rounds) + 1, "first_shard": progress["first_shard"], "retried": progress["retried"],
        "recovered": after["successes"] - progress["before"]["successes"],
        "before": progress["before"], "after": _brief(after), "seconds": round(time.time() - started, 3)}]
    summary["download"] = after
    summary["counts"]["downloaded"] = after["successes"]
    for lang, entry in summary.get("languages", {}).items():
        if "downloaded" in entry:
            entry["downloaded"] = after.get("languages", {}).get(lang, 0)
    write_json(work.path(SUMMARY), summary)
    return summary


def _brief(download: dict) -> dict:
    """The counts of a download summary that a retry changes."""
    return {"successes": download["successes"],
            "failures": {reason: entry["count"] for reason, entry in download["failures"].items()}}
