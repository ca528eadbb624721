"""`wit filter`: a SHARDS dir in, a filtered SHARDS dir out.

1. Read every input shard once, in parallel (checked against its manifest entry), with
   each image's pHash when a hash filter is on; one unit of work each, kept in the
   scratch dir, so a run stopped later (a full disk, a kill) does not hash again.
2. The filters, in this order, each judging only what the ones before kept (one row in
   removed.parquet per removed sample, naming the filter that removed it):
   decontaminate (a data image within the Hamming radius of an evaluation image), text
   rules, CLIP score, near-dup (in uid order, a sample within the radius of a kept one).
3. The kept samples in input order, their members copied byte for byte, into shards of
   the input's size (one unit of work each, in parallel); then removed.parquet,
   contamination.json, sizes.json, datacard.json and .png, and last manifest.json.
The same input and settings give byte-identical output; a rerun resumes or does nothing.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit import __version__
from wit.filter import clipscore, samples
from wit.filter.filters import ClipScore, Decontaminate, EvalVectors, NearDup, TextRules, eval_name
from wit.filter.removal import REMOVED, Removal
from wit.formats.flags import option
from wit.formats.atomic import file_sha256, write_json, write_parquet
from wit.formats.embeddings import SUMMARY as EMBED_SUMMARY, manifest_sha256
from wit.formats.inputs import describe_listing
from wit.formats.errors import WitError
from wit.formats.evalsets import EvalSet, open_evalset
from wit.formats.shards import DATACARD, MANIFEST, read_manifest, shard_name, write_sizes
from wit.formats.shardwrite import SourceTars, plot_distribution, write_shard as write_shard_to
from wit.formats.processes import worker_pool
from wit.formats.workdir import Unit, WorkDir, claim

log = logging.getLogger("wit.filter")

DEFAULT_HAMMING = 8   # see the README: recall >= 0.98 on planted copies, no unrelated photo removed
DEFAULT_EVAL_COSINE = 0.96
CONTAMINATION = "contamination.json"
FILTERS = (Decontaminate.name, TextRules.name, ClipScore.name, NearDup.name)   # in the order they run


@dataclass(frozen=True)
class FilterConfig:
    shards: str = option(help="input SHARDS dir (wit shard)", metavar="DIR")
    out: str = option(help="output SHARDS dir", metavar="DIR")
    near_dup: bool = option(False, "remove near-duplicate images (pHash within --hamming); of a group, the first "
                                   "in uid order is kept")
    decontaminate: tuple[str, ...] = option((), "remove images within --hamming of an image of these evaluation "
                                                "sets (ImageFolder or WebDataset layout; repeatable)",
                                            metavar="EVAL")
    hamming: int = option(DEFAULT_HAMMING, "pHash match: Hamming distance at most this (of 64 bits)")
    clip_score: bool = option(False, "remove samples by the cosine of their image and text embeddings "
                                     "(--embeddings; --min-score or --keep-fraction)")
    embeddings: str = option("", "EMBED dir (wit embed) of the input SHARDS dir", metavar="DIR")
    checkpoint: str = option("", "a model (a trainer checkpoint, or an OpenCLIP file with --model): embeds the "
                                 "input for --clip-score without --embeddings, and with --decontaminate also "
                                 "matches evaluation images by embedding cosine (--eval-cosine)", metavar="FILE")
    model: str = option("", "the architecture of an OpenCLIP --checkpoint file (as for wit embed)",
                        metavar="NAME|FILE")
    tokenizer: str = option("", "with --model: the tokenizer file of its text tower (as for wit embed)",
                            metavar="FILE")
    eval_cosine: float = option(DEFAULT_EVAL_COSINE, "--decontaminate with --checkpoint: an image whose "
                                                     "embedding has at least this cosine with an evaluation "
                                                     "image's is removed too")
    min_score: float | None = option(None, "--clip-score: keep samples scoring at least this")
    keep_fraction: float | None = option(None, "--clip-score: keep this top fraction by score (0 < F <= 1)")
    min_words: int = option(0, "remove texts of fewer words (whitespace-separated; 0: off)")
    max_length: int = option(0, "remove texts longer than this many characters (0: off)")
    drop_file_names: bool = option(False, "remove texts that are a file name (an image file's, or the url's)")
    drop_urls: bool = option(False, "remove texts that are a url")
    samples_per_shard: int = option(0, "samples per output shard (0: the input's)")
    workers: int = option(os.cpu_count() or 1, "worker processes")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if not (self.near_dup or self.decontaminate or self.clip_score or self.min_words or self.max_length
                or self.drop_file_names or self.drop_urls):
            raise WitError("no filter chosen: give --near-dup, --decontaminate, --clip-score or a text rule "
                           "(--min-words, --max-length, --drop-file-names, --drop-urls)")
        if not 0 <= self.hamming <= 32:
            raise WitError("--hamming: must be between 0 and 32")
        for name in ("min_words", "max_length", "samples_per_shard"):
            if getattr(self, name) < 0:
                raise WitError(f"--{name.replace('_', '-')}: must not be negative")
        if self.workers < 1:
            raise WitError("--workers: must be at least 1")
        chosen = [f for f in ("min_score", "keep_fraction") if getattr(self, f) is not None]
        if self.clip_score:
            if not (self.embeddings or self.checkpoint):
                raise WitError("--clip-score: needs --embeddings DIR (wit embed) or --checkpoint FILE")
            if len(chosen) != 1:
                raise WitError("--clip-score: give exactly one of --min-score and --keep-fraction")
            if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
                raise WitError("--keep-fraction: must be in (0, 1]")
        elif chosen:
            raise WitError(f"--{chosen[0].replace('_', '-')}: only with --clip-score")
        if self.embeddings and not (self.clip_score or self.decontaminate and self.checkpoint):
            raise WitError("--embeddings: only with --clip-score, or --decontaminate --checkpoint")
        if self.checkpoint and not (self.clip_score or self.decontaminate):
            raise WitError("--checkpoint: only with --clip-score or --decontaminate")
        if self.model and not self.checkpoint:
            raise WitError("--model: only with --checkpoint (an OpenCLIP file's architecture)")
        if self.tokenizer and not self.model:
            raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")
        if not -1 <= self.eval_cosine <= 1:
            raise WitError("--eval-cosine: must be between -1 and 1")
        names = [eval_name(p) for p in self.decontaminate]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise WitError(f"--decontaminate: two evaluation sets named {repeated[0]!r} (their directory names "
                           "name them in contamination.json)")


def run(config: FilterConfig) -> dict:
    """Build (or finish, or confirm) the filtered SHARDS dir; return its manifest."""
    manifest = read_manifest(config.shards)
    evalsets = [open_evalset(path) for path in config.decontaminate]
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("shards", "out", "workers", "overwrite", "embeddings", "checkpoint", "tokenizer")}
    settings["samples_per_shard"] = config.samples_per_shard or max([s["samples"] for s in manifest["shards"]],
                                                                    default=1)
    inputs = {"shards": os.path.abspath(config.shards), "manifest_sha256": manifest_sha256(config.shards),
              "evalsets": {eval_name(e.path): _fingerprint(e) for e in evalsets},
              "embeddings": file_sha256(os.path.join(config.embeddings, EMBED_SUMMARY),
                                        "embeddings summary (not a finished `wit embed` output?)")
              if config.embeddings else None,
              "checkpoint_sha256": file_sha256(config.checkpoint, "checkpoint") if config.checkpoint else None,
              **({"tokenizer_sha256": file_sha256(config.tokenizer, "tokenizer file")} if config.tokenizer else {})}
    with claim(config.out, "filter", {**settings, "inputs": inputs}, config.overwrite,
               inputs=tuple(p for p in (config.shards, *config.decontaminate, config.embeddings) if p)) as work:
        done = work.complete()
        if done is not None:
            return done
        embed_dir = config.embeddings or (_embed(config, work) if config.checkpoint else "")
        hashing = config.near_dup or bool(evalsets)
        with worker_pool(config.workers, "wit.filter.samples") as pool:
            table = _read(config.shards, manifest, hashing, pool, work)
            # the embeddings, row for row, read once for every filter that needs them
            embedded = clipscore.aligned(embed_dir, config.shards, table["uid"]) if embed_dir else None
            vectors = EvalVectors(embedded, config.checkpoint, config.model, config.eval_cosine, config.tokenizer) \
                if evalsets and config.checkpoint else None
            decontaminate = Decontaminate(evalsets, config.hamming, pool, vectors) if evalsets else None
            chosen = [decontaminate,
                      TextRules(config.min_words, config.max_length, config.drop_file_names, config.drop_urls)
                      if config.min_words or config.max_length or config.drop_file_names or config.drop_urls
                      else None,
                      ClipScore(embedded, config.min_score, config.keep_fraction) if config.clip_score else None,
                      NearDup(config.hamming) if config.near_dup else None]
            removal = Removal(table.num_rows, FILTERS)
            for one in chosen:
                if one is not None:
                    removal.apply(one, table)
            kept = np.flatnonzero(removal.alive)
            shards = _write_all(table, kept, settings["samples_per_shard"], config.shards, work, pool)
        counts = removal.counts()
        counts.update(input_samples=table.num_rows, kept_samples=len(kept),
                      unhashable_images=int(table["phash"].null_count) if hashing else 0)
        removal.write(work.path(REMOVED), table["uid"])
        if decontaminate is not None:
            write_json(work.path(CONTAMINATION), decontaminate.report)
        sizes = {s["name"]: s["samples"] for s in shards}
        write_sizes(work.root, sizes)
        card, before, after = removal.datacard(table["query_ids"], counts)
        write_json(work.path(DATACARD), card)
        plot_distribution({"before filtering": before, "after filtering": after}, manifest["cap"],
                          work.path("datacard.png"))
        out_manifest = {
            "tool": "wit filter", "version": __version__, **settings, "cap": manifest["cap"],
            "shards": shards, "total_samples": sum(sizes.values()), "total_bytes": sum(s["bytes"] for s in shards),
            "counts": counts, "inputs": inputs,
        }
        write_json(work.path(MANIFEST), out_manifest)
        work.finish(out_manifest)
    return out_manifest


# ---- 1. read -------------------------------------------------------------------------


def _read(shards_dir: str, manifest: dict, hashing: bool, pool: ProcessPoolExecutor, work: WorkDir) -> pa.Table:
    """Every input shard's samples (and hashes), one unit of work each: a shard read and
    hashed before a kill is read back from the scratch dir, not hashed again."""
    import pyarrow.parquet as pq

    entries = manifest["shards"]
    os.makedirs(work.scratch("read"), exist_ok=True)
    tables: dict[int, pa.Table] = {}

    def keep(u: Unit, columns: dict) -> dict:
        index = u.args[0]
        tables[index] = pa.Table.from_pydict(columns, schema=samples.SCHEMA)
        write_parquet(work.path(_read_file(work, index)), tables[index])
        return {"samples": tables[index].num_rows}

    units = [Unit(_read_unit(i), (i, os.path.join(shards_dir, e["name"]), e, hashing), [_read_file(work, i)])
             for i, e in enumerate(entries)]
    work.run_units(units, samples.read_shard, pool, desc="read", unit="shard", what="input shards read",
                   finish=keep)
    for i in range(len(entries)):
        if i not in tables:   # read by an earlier run
            tables[i] = pq.read_table(work.path(_read_file(work, i)), schema=samples.SCHEMA)
    table = pa.concat_tables([tables[i] for i in range(len(entries))]) if tables else samples.SCHEMA.empty_table()
    if table.num_rows and pc.count_distinct(table["uid"]).as_py() != table.num_rows:
        raise WitError(f"{os.path.join(shards_dir, MANIFEST)}: the shards hold a uid twice (not a `wit shard` output?)")
    return table


def _read_unit(shard: int) -> str:
    return f"read-{shard:06d}"


def _read_file(work: WorkDir, shard: int) -> str:
    """Input shard `shard`'s samples in the scratch dir, relative to the output dir."""
    return os.path.relpath(work.scratch("read", f"{shard:06d}.parquet"), work.root)


# ---- 2. filters ----------------------------------------------------------------------


def _embed(config: FilterConfig, work: WorkDir) -> str:
    """`wit embed` of the input with --checkpoint, into the scratch dir (resumed like it); its dir."""
    from train.model.shard_embeddings import embed_shards_dir

    out = work.scratch("embed")
    embed_shards_dir(config.checkpoint, config.shards, out, model=config.model, workers=min(config.workers, 8),
                     tokenizer=config.tokenizer)
    return out


# ---- 3. write ------------------------------------------------------------------------


def _write_all(table: pa.Table, kept: np.ndarray, per_shard: int, shards_dir: str, work: WorkDir,
               pool: ProcessPoolExecutor) -> list[dict]:
    columns = table.select(["shard", "key", "extensions", "offsets", "sizes"])
    tars = sorted({int(s) for s in pc.unique(table["shard"]).to_pylist()})
    names = {i: os.path.join(shards_dir, shard_name(i)) for i in tars}

    def plan(start: int) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
        rows = columns.take(pa.array(kept[start:start + per_shard])).to_pydict()
        return [(names[s], k, list(zip(e, o, z))) for s, k, e, o, z in
                zip(rows["shard"], rows["key"], rows["extensions"], rows["offsets"], rows["sizes"])]

    units = [Unit(shard_name(index), partial(lambda i, start: (i, plan(start), work.root), index, start),
                  [shard_name(index)]) for index, start in enumerate(range(0, len(kept), per_shard))]
    done = work.run_units(units, write_shard, pool, desc="shards", unit="shard", what="shards written",
                          finish=lambda u, result: result[1])
    return list(done.counters.values())


def write_shard(index: int, plan: list[tuple[str, str, list[tuple[str, int, int]]]], out: str) -> tuple[int, dict]:
    """Write output shard `index`: each planned sample (source tar, key, its members) with
    its members' bytes copied from the source; its manifest entry."""
    with SourceTars("wit filter") as sources:
        return write_shard_to(out, index, ((key, [(ext, sources.read(tar, key, offset, size))
                                                  for ext, offset, size in members])
                                           for tar, key, members in plan))


def _fingerprint(evalset: EvalSet) -> dict:
    """What decides an evaluation set's images: its files' names, sizes and mtimes."""
    return describe_listing(evalset.path, evalset.folder.files if evalset.folder is not None else evalset.tars)

