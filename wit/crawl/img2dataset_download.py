"""Downloading the selected candidates with img2dataset (multiprocessing or Spark).

img2dataset writes webdataset shards (`NNNNN.tar`, `NNNNN.parquet`, `NNNNN_stats.json`)
and, run again on the same output in its incremental mode, redoes only the shards that
have no stats file: that is what makes a killed crawl resumable. Its downloader is
replaced by `WitDownloader` (the guards of image_fetch.py). A sample is identified by
(uid, caption); `--retry-failed` downloads its transient failures again into shards
numbered after the existing ones, and the summaries count each sample's last attempt.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import logging
import os
import signal
import sys
from collections import Counter
from typing import Iterator
from urllib.parse import urlsplit

import img2dataset
import pyarrow as pa
import pyarrow.parquet as pq

from wit.crawl.config import CrawlConfig
from wit.formats.atomic import atomic_path, read_json
from wit.crawl.image_fetch import DEADLINE_ERROR, FetchPolicy, WitDownloader
from wit.crawl.spark import spark_session
from wit.formats.crawl import finished_shards, unfinished_shards
from wit.formats.errors import Unfinished
from wit.formats.queries import is_worldwide

log = logging.getLogger("wit.crawl")
i2d_main = importlib.import_module("img2dataset.main")  # the package's `main` attribute is a function


def download(config: CrawlConfig, selected_dir: str, output_dir: str, counters_dir: str,
             first_shard: int = 0) -> None:
    """Download every row of `selected_dir/*.parquet` into `output_dir`, shards numbered from
    `first_shard`, each shard's robots.txt counters into `counters_dir`; resumes."""
    per_process = max(1, config.max_per_host // config.processes) if config.max_per_host else 0
    policy = FetchPolicy(config.network_policy(), config.max_pixels, config.max_image_bytes,
                         config.respect_robots, per_process, os.path.abspath(counters_dir))
    os.makedirs(counters_dir, exist_ok=True)
    extra_columns = ["uid", "query_ids", *sample_columns(config)]
    with _wit_downloader(policy, first_shard), _spark(config), contextlib.redirect_stdout(sys.stderr):
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
    incomplete = unfinished_shards(output_dir)
    if incomplete:
        raise Unfinished(f"{output_dir}: shards {', '.join(incomplete)} failed to download; "
                       "run the same command again to retry them")


def sample_columns(config: CrawlConfig) -> list[str]:
    """The selected columns, besides url, text, uid and query_ids, that go into each
    sample's json: the page url (WAT, and image-centric crawls), the text's language
    (worldwide lists) and every text (image)."""
    image = config.unit == "image"
    return ((["page_url"] if config.wat or image else []) + (["lang"] if is_worldwide(config.queries) else [])
            + (["texts"] if image else []))


@contextlib.contextmanager
def _wit_downloader(policy: FetchPolicy, first_shard: int):
    """Make img2dataset build a WitDownloader, number its shards from `first_shard`, and
    leave SIGINT to the command (`_KeepSigint`)."""
    original_downloader, original_reader = i2d_main.Downloader, i2d_main.Reader

    class Reader(original_reader):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.start_shard_id = first_shard

    i2d_main.Downloader = functools.partial(WitDownloader, policy=policy)
    i2d_main.Reader = Reader
    i2d_main.signal = _KeepSigint()
    try:
        yield
    finally:
        i2d_main.Downloader, i2d_main.Reader, i2d_main.signal = original_downloader, original_reader, signal


class _KeepSigint:
    """The `signal` module as img2dataset's `download` sees it: its SIGINT handler (which
    deletes the shards' temporary files under the running workers, then exits 0) is not
    installed; the command's leader handles SIGINT (wit.formats.processes)."""
    SIGINT = signal.SIGINT

    @staticmethod
    def signal(signum, handler):
        return signal.getsignal(signum) if signum == signal.SIGINT else signal.signal(signum, handler)

    def __getattr__(self, name):
        return getattr(signal, name)


def _spark(config: CrawlConfig) -> contextlib.AbstractContextManager:
    """A Spark session for the pyspark distributor (img2dataset finds it with getOrCreate)."""
    if config.distributor != "pyspark":
        return contextlib.nullcontext()
    return spark_session(config.spark_master, config.processes)


def done_shards(output_dir: str) -> list[int]:
    """The numbers of the shards img2dataset finished, ascending."""
    return [int(n) for n in finished_shards(output_dir)]


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
    ("http_429", ("HTTP Error 429",)),
    ("http_4xx", ("HTTP Error 4",)),
    ("http_5xx", ("HTTP Error 5",)),
    ("redirect_loop", ("redirect error that would lead to an infinite loop",)),
    ("connection", ("urlopen error", "Connection", "Remote end closed", "RemoteDisconnected")),
)
# failures that may go away when tried again later (`wit crawl --retry-failed`)
TRANSIENT_REASONS = ("timeout", "connection", "http_429", "http_5xx")
EXAMPLES = 3
TOP_HOSTS = 20
TOP_ERRORS = 50


def failure_reason(message: str) -> str:
    """The reason (one of FAILURE_REASONS, else `other`) of a download error message."""
    return next((reason for reason, patterns in FAILURE_REASONS if any(p in message for p in patterns)), "other")


def final_attempts(output_dir: str, retried_from: int | None, columns: list[str],
                   optional: list[str] = ()) -> Iterator[pa.Table]:
    """Each done shard's rows (`columns` of its parquet) that are the last attempt of their
    sample (uid, caption): a sample tried again in a shard numbered `retried_from` or later
    counts there, not where it failed before (with the `optional` columns the shard has).
    Shards newest first; memory grows with the retried samples only."""
    superseded: set[tuple[str, str]] = set()
    for shard in reversed(done_shards(output_dir)):
        path = os.path.join(output_dir, f"{shard:05d}.parquet")
        present = pq.read_schema(path).names if optional else []
        table = pq.read_table(path, columns=list(dict.fromkeys(["uid", "caption", *columns,
                                                                *(c for c in optional if c in present)])))
        keys = list(zip(table["uid"].to_pylist(), table["caption"].to_pylist()))
        if superseded:
            table = table.filter(pa.array([k not in superseded for k in keys], pa.bool_()))
        if retried_from is not None and shard >= retried_from:
            superseded.update(keys)
        yield table


def download_summary(output_dir: str, counters_dir: str, retried_from: int | None = None) -> dict:
    """Each sample's last attempt, summed: samples, successes, failures by kind, by reason
    (with a few of their messages) and by message; per-host outcomes; robots.txt fetches;
    and for a worldwide crawl the successes by language."""
    status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    hosts: Counter[tuple[str, bool]] = Counter()
    languages: Counter[str] = Counter()
    for table in final_attempts(output_dir, retried_from, ["url", "status", "error_message"], optional=["lang"]):
        columns = table.to_pydict()
        status.update(columns["status"])
        if "lang" in columns:
            languages.update(lang for lang, s in zip(columns["lang"], columns["status"]) if s == "success")
        errors.update(e for s, e in zip(columns["status"], columns["error_message"]) if s != "success")
        hosts.update((urlsplit(url).netloc.lower(), s == "success") for url, s in zip(columns["url"], columns["status"]))
    failures: dict[str, dict] = {}
    for message, count in errors.most_common():
        entry = failures.setdefault(failure_reason(message or ""), {"count": 0, "examples": []})
        entry["count"] += count
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(message)
    return {"shards": len(done_shards(output_dir)), "count": sum(status.values()), "successes": status["success"],
            "failed_to_download": status["failed_to_download"], "failed_to_resize": status["failed_to_resize"],
            "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1]["count"])),
            "errors": dict(errors.most_common(TOP_ERRORS)), "hosts": _top_hosts(hosts),
            "robots": _robots_counts(counters_dir), **({"languages": dict(sorted(languages.items()))}
                                                        if languages else {})}


def _top_hosts(outcomes: Counter[tuple[str, bool]], top: int = TOP_HOSTS) -> dict[str, dict[str, int]]:
    """Successes and failures of the `top` hosts with the most samples."""
    totals: Counter[str] = Counter()
    for (host, _), n in outcomes.items():
        totals[host] += n
    return {host: {"successes": outcomes[host, True], "failures": outcomes[host, False]}
            for host, _ in totals.most_common(top)}


def _robots_counts(counters_dir: str) -> dict:
    """The shards' robots.txt fetches summed (once per host and download process), with a
    few failures."""
    counts: Counter[str] = Counter()
    examples: list[str] = []
    for path in sorted(glob.glob(os.path.join(counters_dir, "*.json"))):
        shard = read_json(path)
        counts.update(shard["robots"])
        examples += shard["robots_failures"][: EXAMPLES - len(examples)]
    return {**{k: counts[k] for k in ("fetched", "missing", "failed")}, "failure_examples": examples}


def write_retry_selection(output_dir: str, retried_from: int | None, target: str, extra_columns: list[str]) -> int:
    """Write the samples whose last attempt failed for a transient reason to `target` (the
    columns `wit crawl` selects: url, text, uid, query_ids, `extra_columns`); how many."""
    columns = ["url", "query_ids", *extra_columns, "status", "error_message"]
    written = 0
    with atomic_path(target) as tmp:
        writer = None
        for table in final_attempts(output_dir, retried_from, columns):
            transient = [s != "success" and failure_reason(e or "") in TRANSIENT_REASONS
                         for s, e in zip(table["status"].to_pylist(), table["error_message"].to_pylist())]
            table = table.filter(pa.array(transient, pa.bool_()))
            table = pa.table({"uid": table["uid"], "url": table["url"], "text": table["caption"],
                              "query_ids": table["query_ids"], **{c: table[c] for c in extra_columns}})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            written += table.num_rows
        if writer is not None:
            writer.close()
        else:
            pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("uid", "url", "text")}), tmp)
    return written
