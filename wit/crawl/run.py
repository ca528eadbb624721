"""`wit crawl`: match the pool partition by partition, count, balance, download.

CRAWL dir (claimed with the settings that decide it, see `wit.formats.workdir`):
- `candidates/ID.parquet`: candidates matching at least one query (uid, url, text,
  query_ids, source columns), one per partition, each marked done with its counts;
  with `--unit image`, `candidates/BUCKET.parquet`: one row per image (uid, url, texts:
  every distinct matched text with its query ids, attribute and pages; see image_groups.py).
- `entry_counts.parquet`: query_id, matched (over the whole pool).
- `selected/ID.parquet`: the balanced subset (cap * oversample), same columns.
- `download/`: img2dataset's webdataset output; a shard with `NNNNN_stats.json` is done.
- `robots/NNNNN.json`: how download shard NNNNN's robots.txt fetches went.
- `crawl.json`: parameters, counts at every step, download results, throughput, and one
  entry per `--retry-failed` round (see retry.py).
A killed crawl run again with the same command skips finished partitions and shards.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from dataclasses import fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit import __version__
from wit.formats.atomic import atomic_path, write_json
from wit.formats.balance import balanced, space_probabilities, space_thresholds
from wit.crawl.config import NOT_DECIDING, CrawlConfig
from wit.crawl.image_groups import bucket_count, group_rows, read_bucket, write_bucket, write_buckets, write_selected
from wit.crawl.match import QueryMatcher
from wit.crawl.worldwide import WorldwideMatcher, count_languages, language_summary
from wit.crawl.sources import Partition, SourceStats, TableColumns, plan_partitions, read_partition
from wit.crawl.urls import REFUSAL_REASONS, refusals
from wit.formats.uids import url_uids
from wit.formats.errors import WitError
from wit.formats.languages import OTHER
from wit.formats.crawl import (CANDIDATE_SCHEMA, CANDIDATES, DOWNLOAD, ENTRY_COUNTS, ROBOTS, SELECTED, SUMMARY,
                               write_entry_counts, write_query_counts)
from wit.formats.globs import expand
from wit.formats.queries import EntrySpace, QueryList, WorldwideQueries, read_query_list
from wit.formats.processes import worker_pool
from wit.formats.workdir import STATE, Unit, WorkDir, claim, sum_counters

log = logging.getLogger("wit.crawl")

def run(config: CrawlConfig) -> dict:
    """Run the stage; return the summary also written to `CRAWL/crawl.json`."""
    started = time.time()
    query_list = read_query_list(config.queries)
    if config.lang_col and not isinstance(query_list, WorldwideQueries):
        raise WitError(f"--lang-col: {config.queries} is a single query list; the language decides which list a "
                       "text is matched against only with a worldwide list (a dir of {lang}.json)")
    files = expand(config.candidates or config.wat, "WAT" if config.wat else "candidate")
    if config.part:
        index, count = config.part_of()
        if len(files) < count:
            raise WitError(f"--part {config.part}: the pool has {len(files)} file(s), fewer than {count} parts")
        files = files[index::count]
    columns = TableColumns(config.url_col, config.text_col, config.text_attrs, config.lang_col)
    partitions = plan_partitions(files, bool(config.wat), columns, config.rows_per_partition)
    fingerprint = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NOT_DECIDING}
    fingerprint |= {"candidate_files": files, "wat": bool(config.wat), "queries_sha256": query_list.sha256}
    with claim(config.out, "crawl", fingerprint, config.overwrite, inputs=(config.queries,),
               revise=config.retry_failed) as work:
        done = work.complete()
        if done is not None and (config.match_only or "download" in done):
            return done
        if config.retry_failed:
            from wit.crawl.retry import retry_failed   # imports img2dataset: only when downloading

            summary = retry_failed(config, work)
            work.finish(summary)
            return summary
        for sub in (CANDIDATES, SELECTED):
            os.makedirs(work.path(sub), exist_ok=True)
        summary = _crawl(config, work, partitions, query_list, columns, started)
        work.finish(summary)
    return summary


def _crawl(config: CrawlConfig, work: WorkDir, partitions: list[Partition],
           query_list: QueryList | WorldwideQueries, columns: TableColumns, started: float) -> dict:
    timings: dict[str, float] = {}
    space = EntrySpace.of(query_list)
    step = time.time()
    partition_stats = _match_all(config, work, partitions, query_list, columns)
    counts = _sum_partition_stats(partition_stats)
    languages = counts.pop("languages", None)
    if config.unit == "image":
        matched, grouped = _group_images(config, work, partitions, space, counts["matched"])
        counts.update(grouped)
    else:
        matched = _entry_counts(work, partitions, space)
    timings["match"] = time.time() - step

    step = time.time()
    thresholds = space_thresholds(matched, space, config.crawl_cap)
    probabilities = space_probabilities(matched, space, config.crawl_cap, thresholds)
    select = _select_images if config.unit == "image" else _select_all
    selected = select(config, work, partitions, probabilities, space)
    timings["select"] = time.time() - step

    summary = {
        "tool": "wit crawl", "version": __version__,
        "parameters": {f.name: getattr(config, f.name) for f in fields(config)},
        "candidate_files": work.fingerprint["candidate_files"],
        "queries": space.size,
        "counts": {**counts, "selected": sum(selected.values())},
        "queries_matched": int((matched > 0).sum()),
    }
    if space.worldwide:
        summary["languages"] = language_summary(space, languages or {}, matched, thresholds, selected)
    if not config.match_only:
        # img2dataset takes seconds to import (torch, albumentations): only when downloading.
        from wit.crawl.img2dataset_download import download, download_summary

        step = time.time()
        if selected:
            download(config, work.path(SELECTED), work.path(DOWNLOAD), work.path(ROBOTS))
        timings["download"] = time.time() - step
        summary["download"] = download_summary(work.path(DOWNLOAD), work.path(ROBOTS))
        summary["counts"]["downloaded"] = summary["download"]["successes"]
        for lang, entry in summary.get("languages", {}).items():
            if lang != OTHER:
                entry["downloaded"] = summary["download"].get("languages", {}).get(lang, 0)
    summary["seconds"] = {k: round(v, 3) for k, v in timings.items()} | {"total": round(time.time() - started, 3)}
    throughput = {"match_rows_per_s": round(summary["counts"]["read"] / max(timings["match"], 1e-9), 1)}
    if "download" in summary:
        throughput["download_samples_per_s"] = round(summary["download"]["count"] / max(timings["download"], 1e-9), 2)
    summary["throughput"] = throughput
    write_json(work.path(SUMMARY), summary)
    return summary


# ---- matching (one worker process per partition) -------------------------------------

_matcher: QueryMatcher | WorldwideMatcher | None = None


def _init_worker(queries: list[str] | tuple[dict[str, str], EntrySpace] | None, lowercase: bool, kana: bool) -> None:
    """A single list's matcher, or for a worldwide list (its `{lang}.json` files and entry
    space) the per-language one; None drops it."""
    global _matcher
    _matcher = (None if queries is None else WorldwideMatcher(*queries, lowercase, kana) if isinstance(queries, tuple)
                else QueryMatcher(queries, lowercase))


def _match_partition(partition: Partition, config: CrawlConfig, columns: TableColumns, root: str) -> dict:
    """Read, police, match one partition; write its candidates and its per-query counts;
    return its counts (the caller marks it done)."""
    stats = SourceStats()
    policy = config.network_policy()
    refused: Counter[str] = Counter()
    space = _space_of(_matcher)
    counts = np.zeros(space.size, dtype=np.int64)
    languages: dict[str, Counter[str]] = {}
    read = matched = 0
    target = os.path.join(root, *_candidates_file(partition, config.unit))
    with atomic_path(target) as tmp:
        writer = None
        for batch in read_partition(partition, columns, config.batch_rows, stats):
            read += batch.num_rows
            allowed, reasons = refusals(batch["url"], policy)
            refused.update(reasons)
            batch = batch.filter(allowed)
            texts = batch["text"].to_pylist()
            if space.worldwide:
                langs = _matcher.languages(texts, batch["lang"].to_pylist() if "lang" in batch.column_names else None)
                query_ids = _in_chunks(_matcher.match, texts, langs)
                batch = batch.drop_columns([c for c in ("lang",) if c in batch.column_names])
                batch = batch.append_column("lang", pa.array(langs, pa.string()))
            else:
                query_ids = _in_chunks(_matcher.match, texts)
            hits = pc.greater(pc.list_value_length(query_ids), 0)
            if space.worldwide:
                count_languages(languages, batch["lang"], hits)
            batch = batch.filter(hits)
            query_ids = query_ids.filter(hits)
            matched += batch.num_rows
            dense, _ = space.dense(query_ids, batch["lang"] if space.worldwide else None)
            counts += np.bincount(dense, minlength=len(counts))
            table = pa.table({"uid": pa.array(url_uids(batch["url"].to_pylist()), pa.string()),
                              "url": batch["url"], "text": batch["text"], "query_ids": query_ids,
                              **{c: batch[c] for c in batch.column_names if c not in ("url", "text")}})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(tmp, CANDIDATE_SCHEMA.append(pa.field("lang", pa.string()))
                                      if space.worldwide else CANDIDATE_SCHEMA)
        writer.close()
    write_query_counts(os.path.join(root, *_counts_file(partition)), counts)
    return {"read": read, "missing_url_or_text": stats.missing_url_or_text,
            "wat_records": stats.records, "corrupt_records": stats.corrupt_records,
            "refused": dict(refused), "matched": matched,
            **({"languages": {lang: dict(c) for lang, c in sorted(languages.items())}} if space.worldwide else {})}


def _in_chunks(match, *columns: list, rows: int = 25_000) -> pa.ListArray:
    """`match(*columns)`, `rows` at a time: the matcher's temporary arrays stay a few MB,
    which is faster than large ones (measured: about a fifth less time, less system time)."""
    return pa.concat_arrays([match(*(c[i:i + rows] for c in columns)) for i in range(0, max(len(columns[0]), 1), rows)])


def _space_of(matcher: QueryMatcher | WorldwideMatcher) -> EntrySpace:
    if isinstance(matcher, WorldwideMatcher):
        return matcher.space
    return EntrySpace.single(matcher.query_count)


def _candidates_file(partition: Partition, unit: str = "pair") -> tuple[str, ...]:
    """A partition's matched rows: the candidates (pair), or the rows grouped into the
    image candidates (image; in scratch)."""
    if unit == "image":
        return STATE, "scratch", "rows", f"{partition.partition_id}.parquet"
    return CANDIDATES, f"{partition.partition_id}.parquet"


def _counts_file(partition: Partition) -> tuple[str, str, str]:
    """Kept with the markers (not scratch): a download after `--match-only` sums them again."""
    return STATE, "counts", f"{partition.partition_id}.parquet"


def _match_all(config: CrawlConfig, work: WorkDir, partitions: list[Partition],
               query_list: QueryList | WorldwideQueries, columns: TableColumns) -> list[dict]:
    os.makedirs(work.path(*_counts_file(partitions[0])[:-1]), exist_ok=True)
    os.makedirs(work.path(*_candidates_file(partitions[0], config.unit)[:-1]), exist_ok=True)
    units = [Unit(p.partition_id, (p, config, columns, work.root),
                  (os.path.join(*_candidates_file(p, config.unit)), os.path.join(*_counts_file(p))))
             for p in partitions]
    todo = sum(work.done(u.name) is None for u in units)
    queries = (({lang: q.path for lang, q in query_list.lists.items()}, EntrySpace.of(query_list))
               if isinstance(query_list, WorldwideQueries) else query_list.queries)
    settings = (queries, config.lowercase, config.kana_as_cjk)
    run_all = functools.partial(work.run_units, units, _match_partition, desc="match", unit="partition",
                                what="partitions matched", rate=lambda r: f"{r.get('read', 0):,.0f} rows/s")
    workers = min(config.processes, max(todo, 1))
    if workers == 1:   # here: no forkserver to start, no second import, no query list to send
        _init_worker(*settings)
        try:
            return list(run_all().counters.values())
        finally:
            _init_worker(None, False, False)
    with worker_pool(workers, "wit.crawl.run", _init_worker, settings) as pool:
        return list(run_all(pool).counters.values())


def _entry_counts(work: WorkDir, partitions: list[Partition], space: EntrySpace,
                  count_files: list[str] | None = None) -> np.ndarray:
    """Sum the partitions' (or the given) counts into entry_counts.parquet (every entry,
    dense; see `write_entry_counts`)."""
    matched = np.zeros(space.size, dtype=np.int64)
    for path in count_files if count_files is not None else [work.path(*_counts_file(p)) for p in partitions]:
        counts = pq.read_table(path)
        np.add.at(matched, counts["query_id"].to_numpy(), counts["matched"].to_numpy())
    write_entry_counts(work.path(ENTRY_COUNTS), matched, space)
    return matched


# ---- image-centric candidates (--unit image, see image_groups.py) ---------------------------


def _group_images(config: CrawlConfig, work: WorkDir, partitions: list[Partition], space: EntrySpace,
                  matched_rows: int) -> tuple[np.ndarray, dict]:
    """Group every partition's matched rows into images, bucket by bucket (here, or on
    Spark with `--distributor pyspark`); `matched` per (image, distinct text) and the
    grouping's counts."""
    buckets = bucket_count(matched_rows, config.bucket_rows)
    found = {b: work.done(_bucket_unit(b)) for b in range(buckets)}
    todo = [b for b, counts in found.items() if counts is None]
    if todo and config.distributor == "pyspark":
        found |= _group_on_spark(config, work, partitions, buckets, todo, space)
    elif todo:
        found |= _group_here(work, partitions, buckets, todo, space)
    totals = sum_counters(list(found.values()))
    count_files = [work.path(_bucket_files(b)[1]) for b in range(buckets)]
    return _entry_counts(work, partitions, space, count_files), {"buckets": buckets, **totals}


def _bucket_unit(bucket: int) -> str:
    return f"images-{bucket:05d}"


# a bucket's images file and per-query counts, relative to the output dir
BUCKET_FILES = (os.path.join(CANDIDATES, "{:05d}.parquet"), os.path.join(STATE, "counts", "images-{:05d}.parquet"))


def _bucket_files(bucket: int) -> tuple[str, str]:
    return tuple(template.format(bucket) for template in BUCKET_FILES)


def _finish_bucket(work: WorkDir, bucket: int, images: pa.Table, matched: np.ndarray) -> dict:
    counts = write_bucket(*(work.path(f) for f in _bucket_files(bucket)), images, matched)
    work.mark_done(_bucket_unit(bucket), counts, _bucket_files(bucket))
    return counts


def _group_here(work: WorkDir, partitions: list[Partition], buckets: int, todo: list[int],
                space: EntrySpace) -> dict[int, dict]:
    """Cut each partition into buckets by uid (scratch), then group bucket by bucket."""
    os.makedirs(work.scratch("buckets"), exist_ok=True)
    cut = [Unit(f"bucket-{p.partition_id}", (work.path(*_candidates_file(p, "image")),
                                             work.path(_scratch_file(work, "buckets", p.partition_id)), buckets),
                [_scratch_file(work, "buckets", p.partition_id)]) for p in partitions]
    groups = dict(zip((p.partition_id for p in partitions),
                      work.run_units(cut, write_buckets, desc="bucket", unit="partition",
                                     what="partitions cut into buckets").counters.values()))

    def group(bucket: int) -> tuple[pa.Table, np.ndarray]:
        parts = [(work.path(_scratch_file(work, "buckets", p.partition_id)), groups[p.partition_id][str(bucket)])
                 for p in partitions if str(bucket) in groups[p.partition_id]]
        return group_rows(read_bucket(parts), space)

    found = work.run_units([Unit(_bucket_unit(b), (b,), _bucket_files(b)) for b in todo], group, desc="group",
                           unit="bucket", what="buckets grouped",
                           finish=lambda u, grouped: write_bucket(*(work.path(f) for f in u.files), *grouped))
    return dict(zip(todo, found.counters.values()))


def _group_on_spark(config: CrawlConfig, work: WorkDir, partitions: list[Partition], buckets: int,
                    todo: list[int], space: EntrySpace) -> dict[int, dict]:
    """The grouping as a Spark groupBy over buckets (see spark.py); buckets without rows
    are written here."""
    from wit.crawl.spark import group_on_spark, spark_session

    rows = [work.path(*_candidates_file(p, "image")) for p in partitions]
    images_path, counts_path = (work.path(template) for template in BUCKET_FILES)
    log.info("grouping %d bucket(s) on Spark", len(todo))
    with spark_session(config.spark_master, config.processes) as spark:
        written = group_on_spark(spark, rows, buckets, todo, space, images_path, counts_path)
    found = {}
    for bucket in todo:
        if bucket in written:
            work.mark_done(_bucket_unit(bucket), written[bucket], _bucket_files(bucket))
            found[bucket] = written[bucket]
        else:
            found[bucket] = _finish_bucket(work, bucket, *group_rows(pa.table({}), space))
    return found


def _scratch_file(work: WorkDir, sub: str, name: str) -> str:
    """A scratch file's path relative to the output dir (as unit markers record them)."""
    return os.path.relpath(work.scratch(sub, f"{name}.parquet"), work.root)


def _select_images(config: CrawlConfig, work: WorkDir, partitions: list[Partition], probabilities: np.ndarray,
                   space: EntrySpace) -> Counter[str]:
    """Draw a text per image and balance, bucket by bucket, into selected/BBBBB.parquet;
    how many were kept, by language ("" for a single list)."""
    names = sorted(n for n in os.listdir(work.path(CANDIDATES)) if n.endswith(".parquet"))
    selected: Counter[str] = Counter()
    for name in names:
        write_selected(work.path(CANDIDATES, name), work.path(SELECTED, name), probabilities, config.seed, space)
        selected += _by_language(pq.read_table(work.path(SELECTED, name), columns=["lang"] if space.worldwide else []),
                                 space)
    return selected


def _by_language(table: pa.Table, space: EntrySpace) -> Counter[str]:
    if not space.worldwide:
        return Counter({"": table.num_rows}) if table.num_rows else Counter()
    return Counter({e["values"]: e["counts"] for e in pc.value_counts(table["lang"]).to_pylist()})


def _sum_partition_stats(results: list[dict]) -> dict:
    """The partitions' counters summed, every refusal reason listed."""
    total = sum_counters([{"refused": {}, **r} for r in results])
    refused = {reason: total["refused"].get(reason, 0) for reason in REFUSAL_REASONS}
    return {**{k: v for k, v in total.items() if k != "refused"}, "refused": refused,
            "refused_total": sum(refused.values())}


def _select_all(config: CrawlConfig, work: WorkDir, partitions: list[Partition], probabilities: np.ndarray,
                space: EntrySpace) -> Counter[str]:
    """Balance each partition's candidates into selected/ with the crawl-time cap (each
    language's own t for a worldwide list); how many were kept, by language."""
    selected: Counter[str] = Counter()
    for p in partitions:
        candidates = pq.ParquetFile(work.path(*_candidates_file(p)))
        target = work.path(SELECTED, f"{p.partition_id}.parquet")
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, candidates.schema_arrow) as writer:
            for batch in candidates.iter_batches(config.batch_rows):
                langs = batch["lang"] if space.worldwide else None
                keep = balanced(batch["uid"], batch["query_ids"], probabilities, config.seed, langs, space)
                chosen = batch if keep.all() else batch.filter(pa.array(keep, pa.bool_()))
                writer.write_batch(chosen)
                selected += _by_language(pa.Table.from_batches([chosen]), space)
    return selected
