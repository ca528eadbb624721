"""`wit shard`: what `wit crawl` downloaded -> final, balanced, de-duplicated shards.

1. Index every `download/NNNNN.tar` (unsafe members refused, a truncated tar read up to
   its damage); a sample needs an image, a text and img2dataset's json with a uid.
2. Order samples by uid; drop later duplicates by uid and by image sha256.
3. Recount each query over what was downloaded and apply the final cap with the
   crawl's deterministic balancing (for a worldwide crawl, per (lang, query), each
   language with its own t from the same counts: `wit.formats.balance.space_thresholds`).
4. Write fixed-size shards in uid order, each atomically with a marker, in parallel;
   then sizes.json, datacard.json, the distribution plot and, last, manifest.json.
The same input gives byte-identical shards; a rerun resumes or, when done, does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from wit import __version__
from wit.formats.flags import option
from wit.formats.balance import balanced, space_probabilities, space_thresholds
from wit.formats.atomic import write_json
from wit.formats.crawl import DOWNLOAD, MAX_SAMPLE_JSON_BYTES, crawl_space, downloaded_tars, parse_sample_json
from wit.formats.inputs import describe_stat
from wit.formats.errors import WitError
from wit.formats.images import REASONS as IMAGE_REASONS, ImageRefused, header_size
from wit.formats.shards import DATACARD, MANIFEST, SAMPLE_JSON_FIELDS, shard_name, write_sizes
from wit.formats.shardwrite import SourceTars, plot_distribution, plot_languages, write_shard as write_shard_to
from wit.formats.tars import Member, image_extension, read_member, scan_tar
from wit.formats.processes import worker_pool
from wit.formats.queries import EntrySpace
from wit.formats.workdir import Unit, WorkDir, claim
from wit.shards.datacard import datacard

log = logging.getLogger("wit.shard")

DEDUP_KEYS = ("uid", "sha256")


@dataclass(frozen=True)
class ShardConfig:
    crawl: str = option(help="CRAWL dir (wit crawl)", metavar="DIR")
    out: str = option("", "SHARDS dir (default: shards/<crawl dir name>)", metavar="DIR")
    cap: int = option(20_000, "final pairs per query")
    seed: int = option(0, "seed of the balancing draws")
    samples_per_shard: int = option(10_000, "samples per shard")
    dedup: tuple[str, ...] = option(DEDUP_KEYS, "keys to de-duplicate by, comma-separated: uid (always, first), sha256",
                                    separator=",")
    workers: int = option(os.cpu_count() or 1, "worker processes")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if not self.out:
            object.__setattr__(self, "out", default_out(self.crawl))
        unknown = [k for k in self.dedup if k not in DEDUP_KEYS]
        if unknown:
            raise WitError(f"--dedup: unknown {', '.join(unknown)} (choose from: {', '.join(DEDUP_KEYS)})")
        if "uid" not in self.dedup:
            raise WitError("--dedup: must include uid (a sample's uid is its key in the shards)")
        for name in ("cap", "samples_per_shard", "workers"):
            if getattr(self, name) < 1:
                raise WitError(f"--{name.replace('_', '-')}: must be at least 1")


def run(config: ShardConfig) -> dict:
    """Build (or finish, or confirm) the SHARDS dir; return the manifest."""
    started = time.time()
    tars = downloaded_tars(config.crawl)
    if not tars:
        raise WitError(f"{os.path.join(config.crawl, DOWNLOAD)}: no downloaded shards (run `wit crawl` first)")
    space = crawl_space(config.crawl)
    inputs = {"crawl": os.path.abspath(config.crawl), "tars": [describe_stat(t) for t in tars]}
    settings = {"cap": config.cap, "seed": config.seed, "samples_per_shard": config.samples_per_shard,
                "dedup": list(config.dedup)}
    with claim(config.out, "shard", {**settings, "inputs": inputs}, config.overwrite,
               inputs=(config.crawl,)) as work:
        done = work.complete()
        if done is not None:
            return done
        with worker_pool(config.workers, "wit.shards.build") as pool:
            index, report = _index(tars, space, pool)
            plan, counts = _plan(index, config, report, space)
            shards = _write_all(plan, config, work, pool)
        sizes = {s["name"]: s["samples"] for s in shards}
        write_sizes(work.root, sizes)
        card = datacard(counts, config.cap, report, space)
        write_json(work.path(DATACARD), card)
        plot_distribution({"downloaded (before the cap)": counts["downloaded"], "kept (after the cap)": counts["kept"]},
                          config.cap, work.path("datacard.png"))
        if space.worldwide:
            plot_languages(card["languages"], work.path("languages.png"))
        manifest = {
            "tool": "wit shard", **settings, "version": __version__,
            "shards": shards, "total_samples": sum(sizes.values()),
            "total_bytes": sum(s["bytes"] for s in shards),
            "counts": report, "inputs": inputs, "seconds": round(time.time() - started, 3),
        }
        write_json(work.path(MANIFEST), manifest)
        work.finish(manifest)
    return manifest


# ---- 1. index ------------------------------------------------------------------------


_DROP_REASONS = ("missing_image_or_text", "malformed_json", "malformed_uid", *IMAGE_REASONS)


def _index(tars: list[str], space: EntrySpace, pool: ProcessPoolExecutor) -> tuple[pa.Table, dict]:
    """One row per usable sample of every tar (tars indexed in parallel), and what was
    dropped, by reason."""
    report = {"tars": len(tars), "unreadable_tars": [], "refused_members": {}, "samples_read": 0,
              **dict.fromkeys(_DROP_REASONS, 0)}
    tables = []
    bar = tqdm(total=len(tars), desc="index", unit="tar", mininterval=1.0, dynamic_ncols=True)
    for path, rows, found in pool.map(index_tar, tars, [space] * len(tars)):
        tables.append(pa.Table.from_pydict(rows, schema=_INDEX_SCHEMA))
        if found["error"]:
            log.warning("%s: %s; keeping the %d samples before the damage", path, found["error"],
                        found["samples_read"])
            report["unreadable_tars"].append({"tar": os.path.basename(path), "error": found["error"],
                                              "samples_recovered": found["samples_read"]})
        for reason, n in found["refused"].items():
            report["refused_members"][reason] = report["refused_members"].get(reason, 0) + n
        for key in ("samples_read", *_DROP_REASONS):
            report[key] += found[key]
        bar.update()
    bar.close()
    return pa.concat_tables(tables), report


def index_tar(path: str, space: EntrySpace) -> tuple[str, dict[str, list], dict]:
    """The usable samples of one tar, as columns of plain values (a worker task: building
    arrow arrays here would import pandas in every worker)."""
    scan = scan_tar(path)
    rows: dict[str, list] = {k: [] for k in _INDEX_SCHEMA.names}
    columns = [rows[k] for k in _INDEX_SCHEMA.names]
    found = {"error": scan.error, "refused": scan.refused, "samples_read": 0,
             **dict.fromkeys(_DROP_REASONS, 0)}
    with open(path, "rb") as f:
        for _, members in scan.samples:
            found["samples_read"] += 1
            sample, problem = _read_sample(f, members, space)
            if problem:
                found[problem] += 1
                continue
            meta, text, image, extension, member = sample
            try:
                width, height, _ = header_size(image)
            except ImageRefused as refused:
                found[refused.reason] += 1
                continue
            values = (meta["uid"], meta["url"], text, width, height, meta["original_width"] or width,
                      meta["original_height"] or height, hashlib.sha256(image).hexdigest(), path,
                      member.offset, member.size, extension, meta["query_ids"], meta["lang"],
                      None if meta["texts"] is None else _JSON.encode(meta["texts"]))
            for column, value in zip(columns, values):
                column.append(value)
    return path, rows, found


_INDEX_SCHEMA = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("original_width", pa.int64()), ("original_height", pa.int64()),
    ("sha256", pa.string()), ("tar", pa.string()), ("offset", pa.int64()), ("size", pa.int64()),
    ("extension", pa.string()), ("query_ids", pa.list_(pa.int32())), ("lang", pa.string()), ("texts", pa.string()),
])


def _read_sample(f: BinaryIO, members: dict[str, Member], space: EntrySpace):
    """((json fields, text, image bytes, image extension, image member), None), or
    (None, the reason to drop the sample)."""
    extension = image_extension(members)
    if extension is None or "txt" not in members or "json" not in members:
        return None, "missing_image_or_text"
    if members["json"].size > MAX_SAMPLE_JSON_BYTES:
        return None, "malformed_json"
    try:
        text = read_member(f, members["txt"]).decode("utf-8")
        image = read_member(f, members[extension])
    except (ValueError, EOFError, OSError):
        return None, "missing_image_or_text"
    if not text.strip() or not image:
        return None, "missing_image_or_text"
    try:
        raw = read_member(f, members["json"])
    except (EOFError, OSError):
        return None, "malformed_json"
    fields, problem = parse_sample_json(raw, space)
    return (None, problem) if problem else ((fields, text, image, extension, members[extension]), None)


# ---- 2-3. de-duplicate and balance ---------------------------------------------------


def _plan(index: pa.Table, config: ShardConfig, report: dict, space: EntrySpace) -> tuple[pa.Table, dict]:
    """The final samples in uid order, and per-entry counts (dense ids) before and after
    the cap, with each language's t (worldwide crawls)."""
    index = index.sort_by([("uid", "ascending"), ("tar", "ascending"), ("offset", "ascending")])
    for key in dict.fromkeys(("uid", *config.dedup)):
        values = index.column(key).to_numpy(zero_copy_only=False)
        _, first = np.unique(values, return_index=True)
        keep = np.zeros(len(values), dtype=bool)
        keep[first] = True
        report[f"duplicates_by_{key}"] = int(len(values) - keep.sum())
        index = index.filter(pa.array(keep))
    def per_entry(table: pa.Table) -> np.ndarray:
        dense, _ = space.dense(table["query_ids"], table["lang"] if space.worldwide else None)
        return np.bincount(dense, minlength=space.size).astype(np.int64)

    downloaded = per_entry(index)
    thresholds = space_thresholds(downloaded, space, config.cap)
    probabilities = space_probabilities(downloaded, space, config.cap, thresholds)
    keep = balanced(index["uid"], index["query_ids"], probabilities, config.seed,
                    index["lang"] if space.worldwide else None, space)
    plan = index.filter(pa.array(keep))
    report["unique_samples"] = index.num_rows
    report["balanced_out"] = int(index.num_rows - plan.num_rows)
    report["final_samples"] = plan.num_rows
    counts = {"downloaded": downloaded, "kept": per_entry(plan), "t": thresholds}
    if space.worldwide:
        counts["samples"] = {name: {e["values"]: e["counts"] for e in pc.value_counts(table["lang"]).to_pylist()}
                             for name, table in (("downloaded", index), ("kept", plan))}
    return plan, counts


# ---- 4. write ------------------------------------------------------------------------


def _write_all(plan: pa.Table, config: ShardConfig, work: WorkDir, pool: ProcessPoolExecutor) -> list[dict]:
    n = config.samples_per_shard
    units = [Unit(shard_name(i), (i, plan.slice(start, n), work.root), [shard_name(i)])
             for i, start in enumerate(range(0, plan.num_rows, n))]
    done = work.run_units(units, write_shard, pool, desc="shards", unit="shard", what="shards written",
                          finish=lambda u, result: result[1])
    return list(done.counters.values())


def write_shard(index: int, rows: pa.Table, out: str) -> tuple[int, dict]:
    """Write shard `index` from its rows (reading image bytes from the source tars),
    hashing the bytes on their way out (no second read of the shard); its manifest entry."""
    columns = rows.to_pydict()

    def samples(sources: SourceTars):
        for row in range(rows.num_rows):
            uid = columns["uid"][row]
            image = sources.read(columns["tar"][row], uid, columns["offset"][row], columns["size"][row])
            meta = {k: columns[k][row] for k in SAMPLE_JSON_FIELDS}
            if columns["lang"][row] is not None:   # worldwide crawls: the text's language
                meta["lang"] = columns["lang"][row]
            if columns["texts"][row] is not None:   # image-centric crawls: every text of the image
                meta["texts"] = json.loads(columns["texts"][row])
            yield uid, [(columns["extension"][row], image), ("json", _JSON.encode(meta).encode()),
                        ("txt", columns["text"][row].encode("utf-8"))]

    with SourceTars("wit shard") as sources:
        return write_shard_to(out, index, samples(sources))


_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


def default_out(crawl: str) -> str:
    """shards/<name of the crawl dir> at the current directory."""
    return os.path.join("shards", os.path.basename(os.path.normpath(crawl)))

