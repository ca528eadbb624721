"""Downloading the selected candidates with img2dataset (multiprocessing or Spark).

img2dataset writes webdataset shards (`NNNNN.tar`, `NNNNN.parquet`, `NNNNN_stats.json`)
and, run again on the same output in its incremental mode, redoes only the shards that
have no stats file: that is what makes a killed crawl resumable. Its downloader is
replaced by `WitDownloader` (deadline, redirect policy, pixel cap; see fetch.py).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import logging
import os
import sys
from collections import Counter
from urllib.parse import urlsplit
from typing import TYPE_CHECKING

import img2dataset
import pyarrow.parquet as pq

from wit.formats.atomic import read_json
from wit.crawl.image_fetch import DEADLINE_ERROR, FetchPolicy, WitDownloader
from wit.formats.errors import WitError

if TYPE_CHECKING:
    from wit.crawl.run import CrawlConfig

log = logging.getLogger("wit.crawl")
i2d_main = importlib.import_module("img2dataset.main")  # the package's `main` attribute is a function


def download(config: CrawlConfig, selected_dir: str, output_dir: str) -> None:
    """Download every row of `selected_dir/*.parquet` into `output_dir`; resumes."""
    per_process = max(1, config.max_per_host // config.processes) if config.max_per_host else 0
    policy = FetchPolicy(config.network_policy(), config.max_pixels, config.max_image_bytes,
                         config.respect_robots, per_process)
    extra_columns = ["uid", "query_ids"] + (["page_url"] if config.wat else [])
    with _wit_downloader(policy), _spark(config), contextlib.redirect_stdout(sys.stderr):
        img2dataset.download(
            url_list=selected_dir,
            input_format="parquet",
            url_col="url",
            caption_col="text",
            save_additional_columns=extra_columns,
            output_folder=output_dir,
            output_format="webdataset",
            image_size=config.image_size,
            resize_mode=config.resize_mode,
            resize_only_if_bigger=True,
            encode_quality=95,
            encode_format="jpg",
            processes_count=config.processes,
            thread_count=config.threads,
            timeout=config.timeout,
            retries=config.retries,
            number_sample_per_shard=config.samples_per_shard,
            distributor=config.distributor,
            incremental_mode="incremental",
            max_image_area=config.max_pixels,
            compute_hash="sha256",
            user_agent_token=config.user_agent,
            enable_wandb=False,
        )
    incomplete = incomplete_shards(output_dir)
    if incomplete:
        raise WitError(f"{output_dir}: shards {', '.join(incomplete)} failed to download; "
                       "run the same command again to retry them")


@contextlib.contextmanager
def _wit_downloader(policy: FetchPolicy):
    """Make img2dataset build a WitDownloader for this call."""
    original = i2d_main.Downloader
    i2d_main.Downloader = functools.partial(WitDownloader, policy=policy)
    try:
        yield
    finally:
        i2d_main.Downloader = original


@contextlib.contextmanager
def _spark(config: CrawlConfig):
    """A Spark session for the pyspark distributor (local mode without a master url)."""
    if config.distributor != "pyspark":
        yield
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise WitError("--distributor pyspark: pyspark is not installed "
                       "(pip install 'wit-toolkit[spark]')") from None

    master = config.spark_master or f"local[{config.processes}]"
    spark = SparkSession.builder.master(master).appName("wit-crawl").getOrCreate()
    try:
        yield
    finally:
        spark.stop()


def incomplete_shards(output_dir: str) -> list[str]:
    """Shards that have a tar but no stats file (left by a killed or failed download)."""
    return sorted(os.path.basename(t)[: -len(".tar")] for t in glob.glob(os.path.join(output_dir, "*.tar"))
                  if not os.path.exists(t[: -len(".tar")] + "_stats.json"))


# a download failure's reason, from the first pattern its message contains
FAILURE_REASONS = (
    ("timeout", (DEADLINE_ERROR, "timed out")),
    ("refused_url", ("refused_url:",)),
    ("too_large", ("too_large:",)),
    ("too_many_pixels", ("too_many_pixels", "DecompressionBomb")),
    ("unsupported_format", ("unsupported_format",)),
    ("decode_error", ("undecodable_image", "decoding error", "cannot identify image")),
    ("x_robots_tag", ("X-Robots-Tag",)),
    ("robots_disallowed", ("robots_disallowed:",)),
    ("http_4xx", ("HTTP Error 4",)),
    ("http_5xx", ("HTTP Error 5",)),
    ("redirect_loop", ("redirect error that would lead to an infinite loop",)),
    ("connection", ("urlopen error", "Connection", "Remote end closed", "RemoteDisconnected")),
)
EXAMPLES = 3
TOP_HOSTS = 20


def failure_reason(message: str) -> str:
    """The reason (one of FAILURE_REASONS, else `other`) of a download error message."""
    return next((reason for reason, patterns in FAILURE_REASONS if any(p in message for p in patterns)), "other")


def download_summary(output_dir: str) -> dict:
    """Sum img2dataset's per-shard stats: samples, successes, failures by kind, by reason
    (with a few of their messages) and by message."""
    totals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    shards = sorted(glob.glob(os.path.join(output_dir, "*_stats.json")))
    for path in shards:
        stats = read_json(path)
        for key in ("count", "successes", "failed_to_download", "failed_to_resize", "bytes_downloaded"):
            totals[key] += stats.get(key, 0) or 0
        errors.update(stats.get("status_dict", {}))
    errors.pop("success", None)
    failures: dict[str, dict] = {}
    for message, count in errors.most_common():
        entry = failures.setdefault(failure_reason(message), {"count": 0, "examples": []})
        entry["count"] += count
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(message)
    return {"shards": len(shards), **{k: totals[k] for k in ("count", "successes", "failed_to_download",
                                                               "failed_to_resize")},
            "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1]["count"])),
            "errors": dict(errors.most_common()), "hosts": _top_hosts(shards)}


def _top_hosts(stats_files: list[str], top: int = TOP_HOSTS) -> dict[str, dict[str, int]]:
    """Successes and failures of the `top` hosts with the most samples (from the shards' parquet)."""
    outcomes: Counter[tuple[str, bool]] = Counter()
    for path in stats_files:
        table = path[: -len("_stats.json")] + ".parquet"
        if os.path.exists(table):
            columns = pq.read_table(table, columns=["url", "status"]).to_pydict()
            outcomes.update((urlsplit(url).netloc.lower(), status == "success")
                            for url, status in zip(columns["url"], columns["status"]))
    totals = Counter()
    for (host, _), n in outcomes.items():
        totals[host] += n
    return {host: {"successes": outcomes[host, True], "failures": outcomes[host, False]}
            for host, _ in totals.most_common(top)}
