"""`wit filter`: a SHARDS dir in, a filtered SHARDS dir out.

1. Read every input shard once, in parallel (checked against its manifest entry), with
   each image's size (from its json or header) and, when a hash filter is on, its pHash;
   one unit of work each, kept in the scratch dir, so a run stopped later (a full disk, a
   kill) does not hash again.
2. The filters (filters.FILTERS, in that order), each judging only what the ones before
   kept (one row in removed.parquet per removed sample, naming the filter that removed it
   and why): decontaminate, language, text rules, image size, embedding heads, CLIP
   score, image clusters, semantic dedup, near-dup.
3. The kept samples in input order into shards of the input's size (one unit of work
   each, in parallel): members copied byte for byte, except the json of a sample some
   filter annotated (its annotations added) and, with --blur-faces, an image with a face
   (blurred, re-encoded once; the boxes in the json). Then removed.parquet,
   annotations.parquet, contamination.json, sizes.json, datacard.json and .png, and last
   manifest.json.
The same input and settings give byte-identical output; a rerun resumes or does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit import __version__
from wit.filter import samples, targets
from wit.filter.decontaminate import Decontaminate, eval_name
from wit.filter.filters import FILTERS, Inputs, chosen
from wit.filter.heads import column as head_column, scores as head_scores
from wit.filter.removal import ANNOTATIONS, REMOVED, Removal
from wit.formats.flags import option
from wit.formats.atomic import file_sha256, write_json, write_parquet
from wit.formats.embeddings import SUMMARY as EMBED_SUMMARY, manifest_sha256
from wit.formats.inputs import describe_listing
from wit.formats.languages import LANGUAGE_CODE
from wit.formats.tars import image_extension
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
# DataComp's basic filtering (its baselines' code: English by fastText, more than 2 words and
# 5 characters, the shorter side at least 200 pixels, an aspect ratio at most 3)
BASIC = {"languages": ("en",), "min_words": 3, "min_length": 6, "min_image_side": 200, "max_aspect_ratio": 3.0}


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
    min_length: int = option(0, "remove texts of fewer characters (0: off)")
    languages: tuple[str, ...] = option((), "keep only texts in these languages (Wikipedia codes, identified "
                                            "offline as wit crawl does; repeatable)", metavar="LANG")
    min_image_side: int = option(0, "remove images whose shorter side, as found on the web (json or header), "
                                    "is under this many pixels (0: off)")
    max_aspect_ratio: float = option(0.0, "remove images whose longer side over the shorter is above this (0: off)")
    basic: bool = option(False, "DataComp's basic filtering: --languages en --min-words 3 --min-length 6 "
                                "--min-image-side 200 --max-aspect-ratio 3 (each flag given overrides its part)")
    head: tuple[str, ...] = option((), "score every sample with an embedding head (a weights-only state dict of a "
                                       "Linear or Sequential; README 'Embedding heads'; repeatable)",
                                   metavar="FILE")
    head_min: tuple[str, ...] = option((), "remove samples a head scores below this: X, or NAME=X with several "
                                           "heads (NAME: the head file's name without extension)", metavar="X")
    head_max: tuple[str, ...] = option((), "remove samples a head scores above this (X or NAME=X)", metavar="X")
    image_clusters: int = option(0, metavar="K",
                                 help="DataComp's image-based filter: k-means of the image embeddings into this "
                                      "many clusters; keep the clusters nearest to --keep-near (0: off)")
    keep_near: tuple[str, ...] = option((), "--image-clusters targets: evaluation sets (dirs, embedded with "
                                            "--checkpoint's image tower) or class lists (a .txt of class names, "
                                            "or clip-benchmark:KEY, e.g. clip-benchmark:imagenet1k; embedded "
                                            "with its text tower and the CLIP prompts)", metavar="EVAL")
    semantic_dedup: float | None = option(None, "SemDeDup: in each k-means cluster of the image embeddings, of two "
                                                "samples with cosine above 1 - EPS the one nearer the centroid "
                                                "is removed", metavar="EPS")
    semdedup_clusters: int = option(0, metavar="K",
                                    help="--semantic-dedup: k-means clusters (0: one per 10,000 samples)")
    seed: int = option(0, "seed of the k-means of --image-clusters and --semantic-dedup")
    blur_faces: bool = option(False, "blur the faces in the kept images (boxes in the sample json; such an "
                                     "image is re-encoded once, the original never written)")
    samples_per_shard: int = option(0, "samples per output shard (0: the input's)")
    workers: int = option(os.cpu_count() or 1, "worker processes")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if self.basic:   # DataComp's basic filtering, for the parts not given
            for name, value in BASIC.items():
                if not getattr(self, name):
                    object.__setattr__(self, name, value)
        if (self.head_min or self.head_max) and not self.head:
            raise WitError(f"--head-{'min' if self.head_min else 'max'}: only with --head")
        if not (self.near_dup or self.decontaminate or self.clip_score or self.min_words or self.max_length
                or self.drop_file_names or self.drop_urls or self.min_length or self.languages
                or self.min_image_side or self.max_aspect_ratio or self.head or self.image_clusters
                or self.semantic_dedup is not None or self.blur_faces):
            raise WitError("no filter chosen: give --near-dup, --decontaminate, --clip-score, --basic, a text rule "
                           "(--min-words, --min-length, --max-length, --drop-file-names, --drop-urls), "
                           "--languages, --min-image-side, --max-aspect-ratio, --head, --image-clusters, "
                           "--semantic-dedup or --blur-faces")
        if not 0 <= self.hamming <= 32:
            raise WitError("--hamming: must be between 0 and 32")
        for name in ("min_words", "max_length", "min_length", "samples_per_shard", "min_image_side",
                     "image_clusters", "semdedup_clusters", "max_aspect_ratio"):
            if getattr(self, name) < 0:
                raise WitError(f"--{name.replace('_', '-')}: must not be negative")
        if 0 < self.max_aspect_ratio < 1:
            raise WitError("--max-aspect-ratio: must be at least 1 (the longer side over the shorter)")
        for code in self.languages:
            if not LANGUAGE_CODE.fullmatch(code):
                raise WitError(f"--languages {code}: not a language code (Wikipedia's: en, fr, zh_yue, ...)")
        if self.workers < 1:
            raise WitError("--workers: must be at least 1")
        chosen = [f for f in ("min_score", "keep_fraction") if getattr(self, f) is not None]
        embedding_filters = self.clip_score or self.head or self.image_clusters or self.semantic_dedup is not None
        if self.clip_score:
            if len(chosen) != 1:
                raise WitError("--clip-score: give exactly one of --min-score and --keep-fraction")
            if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
                raise WitError("--keep-fraction: must be in (0, 1]")
        elif chosen:
            raise WitError(f"--{chosen[0].replace('_', '-')}: only with --clip-score")
        if embedding_filters and not (self.embeddings or self.checkpoint):
            flag = next(f for f, on in (("--clip-score", self.clip_score), ("--head", self.head),
                                        ("--image-clusters", self.image_clusters),
                                        ("--semantic-dedup", self.semantic_dedup is not None)) if on)
            raise WitError(f"{flag}: needs --embeddings DIR (wit embed) or --checkpoint FILE")
        if self.embeddings and not (embedding_filters or self.decontaminate and self.checkpoint):
            raise WitError("--embeddings: only with --clip-score, --head, --image-clusters, --semantic-dedup, "
                           "or --decontaminate --checkpoint")
        if self.checkpoint and not (embedding_filters or self.decontaminate):
            raise WitError("--checkpoint: only with --clip-score, --head, --image-clusters, --semantic-dedup or "
                           "--decontaminate")
        if self.model and not self.checkpoint:
            raise WitError("--model: only with --checkpoint (an OpenCLIP file's architecture)")
        if self.tokenizer and not self.model:
            raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")
        if not -1 <= self.eval_cosine <= 1:
            raise WitError("--eval-cosine: must be between -1 and 1")
        if self.image_clusters and not self.keep_near:
            raise WitError("--image-clusters: needs --keep-near EVAL... (evaluation sets or class lists)")
        if self.keep_near and not self.image_clusters:
            raise WitError("--keep-near: only with --image-clusters K")
        if self.keep_near and not self.checkpoint:
            raise WitError("--keep-near: needs --checkpoint (the model of the embeddings, to embed the targets)")
        if self.semantic_dedup is not None and not 0 <= self.semantic_dedup < 1:
            raise WitError("--semantic-dedup: EPS must be in [0, 1) (pairs with cosine above 1 - EPS are duplicates)")
        if self.semdedup_clusters and self.semantic_dedup is None:
            raise WitError("--semdedup-clusters: only with --semantic-dedup")
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
                if k not in ("shards", "out", "workers", "overwrite", "embeddings", "checkpoint", "tokenizer",
                             "head", "keep_near")}
    settings["samples_per_shard"] = config.samples_per_shard or max([s["samples"] for s in manifest["shards"]],
                                                                    default=1)
    inputs = {"shards": os.path.abspath(config.shards), "manifest_sha256": manifest_sha256(config.shards),
              "evalsets": {eval_name(e.path): _fingerprint(e) for e in evalsets},
              "embeddings": file_sha256(os.path.join(config.embeddings, EMBED_SUMMARY),
                                        "embeddings summary (not a finished `wit embed` output?)")
              if config.embeddings else None,
              "checkpoint_sha256": file_sha256(config.checkpoint, "checkpoint") if config.checkpoint else None,
              **({"tokenizer_sha256": file_sha256(config.tokenizer, "tokenizer file")} if config.tokenizer else {}),
              **({"heads": [{"path": os.path.abspath(h), "sha256": file_sha256(h, "head file")} for h in config.head]}
                 if config.head else {}),
              **({"keep_near": [targets.fingerprint(t) for t in config.keep_near]} if config.keep_near else {})}
    with claim(config.out, "filter", {**settings, "inputs": inputs}, config.overwrite,
               inputs=tuple(p for p in (config.shards, *config.decontaminate, config.embeddings) if p)) as work:
        done = work.complete()
        if done is not None:
            return done
        embed_dir = config.embeddings or (_embed(config, work) if config.checkpoint else "")
        hashing = config.near_dup or bool(evalsets)
        with worker_pool(config.workers, "wit.filter.samples") as pool:
            table = _read(config.shards, manifest, hashing, pool, work)
            context = Inputs(config, table, embed_dir, evalsets, pool)
            if config.head:   # every filter sees the heads' scores
                for name, score in head_scores(context.heads, context.embedded).items():
                    table = table.append_column(head_column(name), pa.array(score, mask=np.isnan(score)))
                context.table = table
            removal = Removal(table.num_rows, tuple(cls.name for cls in FILTERS))
            used = chosen(config, context)
            for one in used:
                removal.apply(one, table)
            kept = np.flatnonzero(removal.alive)
            shards, faces = _write_all(table, kept, removal, settings["samples_per_shard"], config, work, pool)
        counts = removal.counts()
        counts.update(input_samples=table.num_rows, kept_samples=len(kept),
                      unhashable_images=int(table["phash"].null_count) if hashing else 0)
        if config.blur_faces:
            counts["faces"] = faces
        removal.write(work.path(REMOVED), table["uid"])
        removal.write_annotations(work.path(ANNOTATIONS), table["uid"])
        for one in used:
            if isinstance(one, Decontaminate):
                write_json(work.path(CONTAMINATION), one.report)
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


def _write_all(table: pa.Table, kept: np.ndarray, removal: Removal, per_shard: int, config: FilterConfig,
               work: WorkDir, pool: ProcessPoolExecutor) -> tuple[list[dict], dict]:
    """The output shards' manifest entries, and the faces blurred (images, faces)."""
    columns = table.select(["shard", "key", "extensions", "offsets", "sizes"])
    tars = sorted({int(s) for s in pc.unique(table["shard"]).to_pylist()})
    names = {i: os.path.join(config.shards, shard_name(i)) for i in tars}
    annotated = bool(removal.annotations)

    def plan(start: int) -> list[tuple[str, str, list[tuple[str, int, int]], dict]]:
        rows = kept[start:start + per_shard]
        got = columns.take(pa.array(rows)).to_pydict()
        return [(names[s], k, list(zip(e, o, z)), removal.json_fields(int(row)) if annotated else {})
                for row, s, k, e, o, z in zip(rows, got["shard"], got["key"], got["extensions"], got["offsets"],
                                              got["sizes"])]

    units = [Unit(shard_name(index),
                  partial(lambda i, start: (i, plan(start), work.root, config.blur_faces), index, start),
                  [shard_name(index)]) for index, start in enumerate(range(0, len(kept), per_shard))]
    done = work.run_units(units, write_shard, pool, desc="shards", unit="shard", what="shards written",
                          finish=lambda u, result: {"entry": result[1], "faces": result[2]})
    results = list(done.counters.values())
    faces = {"images_blurred": sum(r["faces"]["images_blurred"] for r in results),
             "faces": sum(r["faces"]["faces"] for r in results)}
    return [r["entry"] for r in results], faces


def write_shard(index: int, plan: list[tuple[str, str, list[tuple[str, int, int]], dict]], out: str,
                blur_faces: bool = False) -> tuple[int, dict, dict]:
    """Write output shard `index`: each planned sample (source tar, key, its members, the
    fields to add to its json) with its members' bytes copied from the source, but for a
    json with fields to add and, with `blur_faces`, an image with faces (see the module's
    doc); its manifest entry, and the faces blurred."""
    blurred = {"images_blurred": 0, "faces": 0}

    def samples(sources: SourceTars):
        for tar, key, members, fields in plan:
            data = {ext: sources.read(tar, key, offset, size) for ext, offset, size in members}
            if fields or blur_faces:
                meta = json.loads(data["json"])
                meta.update(fields)
                if blur_faces:
                    extension = image_extension(data)
                    image, boxes = blur(data[extension], key)
                    meta["faces"] = [list(b) for b in boxes]
                    if image is not None:
                        data[extension] = image
                        meta["sha256"] = hashlib.sha256(image).hexdigest()
                        blurred["images_blurred"] += 1
                        blurred["faces"] += len(boxes)
                data["json"] = _JSON.encode(meta).encode()
            yield key, [(ext, data[ext]) for ext, _, _ in members]

    with SourceTars("wit filter") as sources:
        index, entry = write_shard_to(out, index, samples(sources))
    return index, entry, blurred


def blur(image: bytes, key: str) -> tuple[bytes | None, list]:
    """The image with its faces blurred (None: no face, the original is kept) and the boxes;
    an image that cannot be decoded is kept as it is, with no boxes."""
    from wit.filter import faces
    from wit.formats.images import ImageRefused

    try:
        return faces.blur_faces(image)
    except ImageRefused:
        return None, []


_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


def _fingerprint(evalset: EvalSet) -> dict:
    """What decides an evaluation set's images: its files' names, sizes and mtimes."""
    return describe_listing(evalset.path, evalset.folder.files if evalset.folder is not None else evalset.tars)

