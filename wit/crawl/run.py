"""`wit crawl`: match the pool partition by partition, count, balance, download.

CRAWL dir:
- `crawl_config.json`: the settings that decide the output; a rerun must match them.
- `candidates/ID.parquet`: candidates matching at least one query (uid, url, text,
  query_ids, source columns); `.work/ID.json` marks a partition done (its counts).
- `entry_counts.parquet`: query_id, matched (over the whole pool).
- `selected/ID.parquet`: the balanced subset (cap * oversample), same columns.
- `download/`: img2dataset's webdataset output; a shard with `NNNNN_stats.json` is done.
- `crawl.json`: parameters, counts at every step, download results, throughput.
A killed crawl run again with the same command skips finished partitions and shards.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from wit import __version__
from wit.atomic import atomic_path, read_json, remove_temporaries, write_json, write_parquet
from wit.balance import balanced
from wit.crawl.match import QueryMatcher
from wit.crawl.sources import Partition, SourceStats, TableColumns, expand, plan_partitions, read_partition
from wit.crawl.urls import REFUSAL_REASONS, refusal, url_uid
from wit.errors import WitError

log = logging.getLogger("wit.crawl")

DISTRIBUTORS = ("multiprocessing", "pyspark")
RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
CANDIDATE_SCHEMA_BASE = [("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                         ("query_ids", pa.list_(pa.int32()))]


@dataclass(frozen=True)
class CrawlConfig:
    """One `wit crawl` run. Fields above `processes` decide the output (see crawl_config.json)."""

    queries: str
    out: str
    candidates: tuple[str, ...] = ()
    wat: tuple[str, ...] = ()
    url_col: str = "url"
    text_col: str = "text"
    cap: int = 20_000
    oversample: float = 1.3
    seed: int = 0
    lowercase: bool = False
    allow_private_hosts: bool = False
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    samples_per_shard: int = 10_000
    max_pixels: int = 89_478_485
    processes: int = os.cpu_count() or 1
    threads: int = 32
    timeout: float = 10.0
    retries: int = 1
    distributor: str = "multiprocessing"
    spark_master: str | None = None
    match_only: bool = False
    rows_per_partition: int = 1_000_000
    batch_rows: int = 100_000

    def __post_init__(self) -> None:
        if bool(self.candidates) == bool(self.wat):
            raise WitError("give either --candidates or --wat")
        if self.distributor not in DISTRIBUTORS:
            raise WitError(f"--distributor: unknown {self.distributor!r} (one of: {', '.join(DISTRIBUTORS)})")
        if self.resize_mode not in RESIZE_MODES:
            raise WitError(f"--resize-mode: unknown {self.resize_mode!r} (one of: {', '.join(RESIZE_MODES)})")
        for name in ("cap", "image_size", "samples_per_shard", "processes", "threads",
                     "rows_per_partition", "batch_rows", "max_pixels"):
            if getattr(self, name) < 1:
                raise WitError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.oversample < 1:
            raise WitError("--oversample: must be at least 1")
        if self.timeout <= 0 or self.retries < 0:
            raise WitError("--timeout must be positive and --retries not negative")

    @property
    def crawl_cap(self) -> float:
        return self.cap * self.oversample


def crawl(config: CrawlConfig) -> dict:
    """Run the stage; return the summary also written to `CRAWL/crawl.json`."""
    started = time.time()
    queries, queries_digest = load_queries(config.queries)
    files = expand(list(config.candidates or config.wat), "WAT" if config.wat else "candidate")
    columns = TableColumns(config.url_col, config.text_col)
    partitions = plan_partitions(files, bool(config.wat), columns, config.rows_per_partition)
    _claim_output(config, files, queries_digest)

    timings: dict[str, float] = {}
    step = time.time()
    partition_stats = _match_all(config, partitions, queries, columns)
    matched = _entry_counts(config.out, partitions, len(queries))
    timings["match"] = time.time() - step

    step = time.time()
    selected = _select_all(config, partitions, matched)
    timings["select"] = time.time() - step

    summary = {
        "tool": "wit crawl", "version": __version__,
        "parameters": {f.name: getattr(config, f.name) for f in fields(config)},
        "queries": len(queries),
        "counts": {**_sum_partition_stats(partition_stats), "selected": selected},
        "queries_matched": int((matched > 0).sum()),
    }
    if not config.match_only:
        # img2dataset takes seconds to import (torch, albumentations): only when downloading.
        from wit.crawl.download import download, download_summary

        step = time.time()
        if selected:
            download(config, os.path.join(config.out, "selected"),
                     os.path.join(config.out, "download"))
        timings["download"] = time.time() - step
        summary["download"] = download_summary(os.path.join(config.out, "download"))
        summary["counts"]["downloaded"] = summary["download"]["successes"]
    summary["seconds"] = {k: round(v, 3) for k, v in timings.items()} | {"total": round(time.time() - started, 3)}
    throughput = {"match_rows_per_s": round(summary["counts"]["read"] / max(timings["match"], 1e-9), 1)}
    if "download" in summary:
        throughput["download_samples_per_s"] = round(summary["download"]["count"] / max(timings["download"], 1e-9), 2)
    summary["throughput"] = throughput
    write_json(os.path.join(config.out, "crawl.json"), summary)
    return summary


def load_queries(directory: str) -> tuple[list[str], str]:
    """The query strings in query_id order, and the file's sha256 (for crawl_config.json)."""
    path = os.path.join(directory, "queries.parquet")
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
    return table.column("query").to_pylist(), digest


def _claim_output(config: CrawlConfig, files: list[str], queries_digest: str) -> None:
    """Write crawl_config.json, or check that an existing one has the same settings."""
    deciding = [f.name for f in fields(config)]
    deciding = deciding[deciding.index("url_col") : deciding.index("processes")]
    identity = {name: getattr(config, name) for name in deciding}
    identity |= {"candidate_files": files, "wat": bool(config.wat), "queries_sha256": queries_digest}
    path = os.path.join(config.out, "crawl_config.json")
    if os.path.exists(path):
        previous = read_json(path)
        changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        if changed:
            raise WitError(f"{config.out}: holds a crawl with other settings ({', '.join(changed)}); "
                           "use another --out")
        log.info("resuming the crawl in %s", config.out)
        for sub in ("candidates", "selected", ".work"):
            remove_temporaries(os.path.join(config.out, sub))
        return
    for sub in ("candidates", "selected", ".work"):
        os.makedirs(os.path.join(config.out, sub), exist_ok=True)
    write_json(path, identity)


# ---- matching (one worker process per partition) -------------------------------------

_matcher: QueryMatcher | None = None


def _init_worker(queries: list[str], lowercase: bool) -> None:
    global _matcher
    _matcher = QueryMatcher(queries, lowercase)


def _match_partition(partition: Partition, config: CrawlConfig, columns: TableColumns) -> dict:
    """Read, police, match one partition; write its candidates; return its counts."""
    stats = SourceStats()
    refused: Counter[str] = Counter()
    counts = np.zeros(_matcher.query_count, dtype=np.int64)
    read = matched = 0
    target = os.path.join(config.out, "candidates", f"{partition.partition_id}.parquet")
    with atomic_path(target) as tmp:
        writer = None
        for batch in read_partition(partition, columns, config.batch_rows, stats):
            read += batch.num_rows
            reasons = [refusal(u, config.allow_private_hosts) for u in batch["url"].to_pylist()]
            refused.update(r for r in reasons if r)
            batch = batch.filter(pa.array([r is None for r in reasons], pa.bool_()))
            query_ids = _matcher.match(batch["text"].to_pylist())
            hits = pc.greater(pc.list_value_length(query_ids), 0)
            batch = batch.filter(hits)
            query_ids = query_ids.filter(hits)
            matched += batch.num_rows
            counts += np.bincount(pc.list_flatten(query_ids).to_numpy(), minlength=len(counts))
            table = pa.table({"uid": pa.array([url_uid(u) for u in batch["url"].to_pylist()], pa.string()),
                              "url": batch["url"], "text": batch["text"], "query_ids": query_ids,
                              **{c: batch[c] for c in batch.column_names if c not in ("url", "text")}})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(tmp, pa.schema(CANDIDATE_SCHEMA_BASE))
        writer.close()
    nonzero = np.flatnonzero(counts)
    write_parquet(_work_file(config.out, partition, "counts.parquet"),
                  pa.table({"query_id": nonzero.astype(np.int32), "matched": counts[nonzero]}))
    result = {"read": read, "missing_url_or_text": stats.missing_url_or_text,
              "wat_records": stats.records, "corrupt_records": stats.corrupt_records,
              "refused": dict(refused), "matched": matched}
    write_json(_work_file(config.out, partition, "json"), result)  # last: marks the partition done
    return result


def _work_file(out: str, partition: Partition, suffix: str) -> str:
    return os.path.join(out, ".work", f"{partition.partition_id}.{suffix}")


def _match_all(config: CrawlConfig, partitions: list[Partition], queries: list[str],
               columns: TableColumns) -> list[dict]:
    done = {p.partition_id: _done(config.out, p) for p in partitions}
    todo = [p for p in partitions if done[p.partition_id] is None]
    if len(todo) < len(partitions):
        log.info("%d of %d partitions matched before", len(partitions) - len(todo), len(partitions))
    results = {pid: r for pid, r in done.items() if r is not None}
    bar = tqdm(total=len(partitions), initial=len(results), unit="partition", desc="match",
               dynamic_ncols=True, mininterval=1.0)
    started, rows = time.time(), 0
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["wit.crawl.run"])
    with ProcessPoolExecutor(min(config.processes, max(len(todo), 1)), mp_context=context,
                             initializer=_init_worker, initargs=(queries, config.lowercase)) as pool:
        futures = {pool.submit(_match_partition, p, config, columns): p for p in todo}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future].partition_id] = result
            rows += result["read"]
            bar.update()
            bar.set_postfix_str(f"{rows / max(time.time() - started, 1e-9):,.0f} rows/s", refresh=False)
    bar.close()
    return [results[p.partition_id] for p in partitions]


def _done(out: str, partition: Partition) -> dict | None:
    marker = _work_file(out, partition, "json")
    candidates = os.path.join(out, "candidates", f"{partition.partition_id}.parquet")
    return read_json(marker) if os.path.exists(marker) and os.path.exists(candidates) else None


def _entry_counts(out: str, partitions: list[Partition], query_count: int) -> np.ndarray:
    """Sum the partitions' counts into entry_counts.parquet (every query_id, dense)."""
    matched = np.zeros(query_count, dtype=np.int64)
    for p in partitions:
        counts = pq.read_table(_work_file(out, p, "counts.parquet"))
        np.add.at(matched, counts["query_id"].to_numpy(), counts["matched"].to_numpy())
    write_parquet(os.path.join(out, "entry_counts.parquet"), pa.table({
        "query_id": pa.array(np.arange(query_count, dtype=np.int32)), "matched": pa.array(matched)}))
    return matched


def _sum_partition_stats(results: list[dict]) -> dict:
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r["refused"])
    keys = ("read", "missing_url_or_text", "wat_records", "corrupt_records", "matched")
    return {**{k: sum(r[k] for r in results) for k in keys},
            "refused": {reason: refused.get(reason, 0) for reason in REFUSAL_REASONS},
            "refused_total": sum(refused.values())}


def _select_all(config: CrawlConfig, partitions: list[Partition], matched: np.ndarray) -> int:
    """Balance each partition's candidates into selected/ with the crawl-time cap."""
    selected = 0
    for p in partitions:
        candidates = pq.ParquetFile(os.path.join(config.out, "candidates", f"{p.partition_id}.parquet"))
        target = os.path.join(config.out, "selected", f"{p.partition_id}.parquet")
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, candidates.schema_arrow) as writer:
            for batch in candidates.iter_batches(config.batch_rows):
                keep = balanced(batch["uid"], batch["query_ids"], matched, config.crawl_cap, config.seed)
                chosen = batch.filter(pa.array(keep, pa.bool_()))
                writer.write_batch(chosen)
                selected += chosen.num_rows
    _remove_stale(os.path.join(config.out, "selected"), {p.partition_id for p in partitions})
    return selected


def _remove_stale(directory: str, ids: set[str]) -> None:
    for path in glob.glob(os.path.join(directory, "*.parquet")):
        if os.path.basename(path)[: -len(".parquet")] not in ids:
            os.remove(path)
