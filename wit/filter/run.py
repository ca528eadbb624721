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
from wit.filter import clipscore, hashes, neardup, samples, textrules
from wit.flags import option
from wit.formats.atomic import file_sha256, write_json, write_parquet
from wit.formats.embeddings import SUMMARY as EMBED_SUMMARY, manifest_sha256
from wit.formats.inputs import describe_listing
from wit.formats.errors import WitError
from wit.formats.evalsets import EvalSet, open_evalset
from wit.formats.shards import DATACARD, MANIFEST, read_manifest, shard_name, write_sizes
from wit.formats.shardwrite import plot_distribution, write_shard_file
from wit.formats.tars import Member, read_member
from wit.formats.processes import worker_pool
from wit.formats.workdir import Unit, WorkDir, claim

log = logging.getLogger("wit.filter")

DEFAULT_HAMMING = 8   # see the README: recall >= 0.98 on planted copies, no unrelated photo removed
DEFAULT_EVAL_COSINE = 0.96
REMOVED, CONTAMINATION = "removed.parquet", "contamination.json"
FILTERS = ("decontaminate", "text", "clip_score", "near_dup")   # in the order they run
REMOVED_SCHEMA = pa.schema([("uid", pa.string()), ("filter", pa.string()), ("reason", pa.string()),
                            ("match", pa.string()), ("value", pa.float64())])
EVAL_BATCH = 512


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
        if not -1 <= self.eval_cosine <= 1:
            raise WitError("--eval-cosine: must be between -1 and 1")
        names = [eval_name(p) for p in self.decontaminate]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise WitError(f"--decontaminate: two evaluation sets named {repeated[0]!r} (their directory names "
                           "name them in contamination.json)")


def eval_name(path: str) -> str:
    """An evaluation set's name in contamination.json and removed.parquet: its dir name."""
    return os.path.basename(os.path.normpath(path))


def run(config: FilterConfig) -> dict:
    """Build (or finish, or confirm) the filtered SHARDS dir; return its manifest."""
    manifest = read_manifest(config.shards)
    evalsets = [open_evalset(path) for path in config.decontaminate]
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("shards", "out", "workers", "overwrite", "embeddings", "checkpoint")}
    settings["samples_per_shard"] = config.samples_per_shard or max([s["samples"] for s in manifest["shards"]],
                                                                    default=1)
    inputs = {"shards": os.path.abspath(config.shards), "manifest_sha256": manifest_sha256(config.shards),
              "evalsets": {eval_name(e.path): _fingerprint(e) for e in evalsets},
              "embeddings": file_sha256(os.path.join(config.embeddings, EMBED_SUMMARY),
                                        "embeddings summary (not a finished `wit embed` output?)")
              if config.embeddings else None,
              "checkpoint_sha256": file_sha256(config.checkpoint, "checkpoint") if config.checkpoint else None}
    with claim(config.out, "filter", {**settings, "inputs": inputs}, config.overwrite,
               inputs=tuple(p for p in (config.shards, *config.decontaminate, config.embeddings) if p)) as work:
        done = work.complete()
        if done is not None:
            return done
        embed_dir = config.embeddings or (_embed(config, work) if config.checkpoint else "")
        hashing = config.near_dup or bool(evalsets)
        with worker_pool(config.workers, "wit.filter.samples") as pool:
            table = _read(config.shards, manifest, hashing, pool, work)
            removal = Removal(table.num_rows)
            # the embeddings, row for row, read once for every filter that needs them
            embedded = clipscore.aligned(embed_dir, config.shards, table["uid"]) if embed_dir else None
            vectors = _EvalVectors(config, embedded) if evalsets and config.checkpoint else None
            contamination = _decontaminate(table, evalsets, config.hamming, removal, pool, vectors) \
                if evalsets else None
            _text_rules(table, config, removal)
            if config.clip_score:
                _clip_score(config, embedded, removal)
            if config.near_dup:
                _near_dup(table, config.hamming, removal)
            kept = np.flatnonzero(removal.alive)
            shards = _write_all(table, kept, settings["samples_per_shard"], config.shards, work, pool)
        counts = removal.counts()
        counts.update(input_samples=table.num_rows, kept_samples=len(kept),
                      unhashable_images=int(table["phash"].null_count) if hashing else 0)
        _write_removed(work.path(REMOVED), table["uid"], removal)
        if contamination is not None:
            write_json(work.path(CONTAMINATION), contamination)
        sizes = {s["name"]: s["samples"] for s in shards}
        write_sizes(work.root, sizes)
        before, after = _per_query(table["query_ids"]), _per_query(table["query_ids"].take(pa.array(kept)))
        write_json(work.path(DATACARD), _datacard(before, after, counts))
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


class Removal:
    """Which samples are removed, by which filter, why, matching what."""

    def __init__(self, n: int) -> None:
        self.alive = np.ones(n, bool)
        self.filter = np.full(n, -1, np.int8)
        self.reason: list[str | None] = [None] * n
        self.match: list[str | None] = [None] * n
        self.value = np.full(n, np.nan)

    def remove(self, row: int, filter_name: str, reason: str, match: str | None = None,
               value: float | None = None) -> None:
        self.alive[row] = False
        self.filter[row] = FILTERS.index(filter_name)
        self.reason[row], self.match[row] = reason, match
        if value is not None:
            self.value[row] = value

    def counts(self) -> dict:
        """Removed samples per filter, and per filter and reason."""
        removed = {f: 0 for f in FILTERS}
        reasons: dict[str, dict[str, int]] = {f: {} for f in FILTERS}
        for row in np.flatnonzero(~self.alive):
            name = FILTERS[self.filter[row]]
            removed[name] += 1
            reasons[name][self.reason[row]] = reasons[name].get(self.reason[row], 0) + 1
        return {"removed": removed, "removed_by_reason": {f: dict(sorted(r.items())) for f, r in reasons.items()}}


class _EvalVectors:
    """Decontamination by embedding cosine: the data's image embeddings (row for row, NaN
    where there is none) in a faiss inner-product index, and the model that embeds the
    evaluation images."""

    def __init__(self, config: FilterConfig, embedded: pa.Table) -> None:
        import faiss

        from train.dist import local_device
        from train.model.clip import load_model

        images = clipscore.matrix(embedded["image"])
        self.rows = np.flatnonzero(~np.isnan(images[:, 0]))
        self.index = faiss.IndexFlatIP(images.shape[1])
        self.index.add(np.ascontiguousarray(images[self.rows]))
        self.loaded = load_model(config.checkpoint, config.model, local_device())
        self.threshold = config.eval_cosine

    def matches(self, images: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, data row, cosine) of every data image at or above the threshold of one of
        `images` (an evaluation image that cannot be decoded matches nothing)."""
        from train.model.encode import image_embeddings

        vectors = image_embeddings(self.loaded, images)
        decoded = np.flatnonzero(~np.isnan(vectors[:, 0]))
        # faiss's range search keeps scores above the radius: a hair under the threshold keeps ties
        lims, scores, labels = self.index.range_search(np.ascontiguousarray(vectors[decoded]),
                                                       float(np.nextafter(np.float32(self.threshold), -2)))
        queries = np.repeat(decoded, np.diff(lims).astype(np.int64))
        keep = scores >= self.threshold
        return queries[keep], self.rows[labels[keep]], scores[keep]


def _decontaminate(table: pa.Table, evalsets: list[EvalSet], radius: int, removal: Removal,
                   pool: ProcessPoolExecutor, vectors: _EvalVectors | None) -> dict:
    """Remove the data images within `radius` of an evaluation image (and, with `vectors`,
    those at or above the cosine threshold of one); per set, its images, how many matched
    (by each detector and in all), and the uids removed (the match: the nearest evaluation
    image, pHash first)."""
    rows, codes = _hashed(table["phash"], np.ones(table.num_rows, bool))
    index = neardup.HashIndex(codes, radius)
    uids = table["uid"]
    report = {}
    for evalset in evalsets:
        name = eval_name(evalset.path)
        eval_codes, by_vector = _eval_hashes(evalset, pool, vectors)
        queries, labels, distances = index.search(eval_codes)
        found = [("phash", queries, rows[labels], distances, np.lexsort((queries, distances, labels)))]
        if vectors is not None:
            v_queries, v_rows, cosines = by_vector
            found.append(("embedding", v_queries, v_rows, cosines, np.lexsort((v_queries, -cosines, v_rows))))
        removed = []
        for reason, q_of, row_of, value_of, order in found:
            first = np.unique(row_of[order], return_index=True)[1]   # per data row: the nearest match
            for q, row, value in zip(q_of[order][first], row_of[order][first], value_of[order][first]):
                if removal.alive[int(row)]:
                    removal.remove(int(row), "decontaminate", reason, f"{name}:{int(q)}", float(value))
                    removed.append(uids[int(row)].as_py())
        matched = {reason: np.unique(q_of) for reason, q_of, *_ in found}
        report[name] = {"path": os.path.abspath(evalset.path), "images": len(eval_codes),
                        "matched_images": int(len(np.unique(np.concatenate(list(matched.values()))))),
                        "matched_images_by": {reason: int(len(q)) for reason, q in matched.items()},
                        "removed": len(removed), "removed_uids": sorted(removed)}
    return report


def _eval_hashes(evalset: EvalSet, pool: ProcessPoolExecutor,
                 vectors: _EvalVectors | None) -> tuple[np.ndarray, tuple | None]:
    """uint8[n, 8]: the pHash of every image of an evaluation set (decoded in the pool);
    with `vectors`, its embedding matches too (query, data row, cosine)."""
    found: list[bytes] = []
    matches: list[tuple] = []

    def flush(batch: list) -> None:
        for sample, code in zip(batch, pool.map(hashes.phash, [s.image for s in batch])):
            if code is None:
                raise WitError(f"{evalset.path}: image {sample.index} cannot be decoded")
            found.append(code)
        if vectors is not None and batch:
            queries, rows, cosines = vectors.matches([s.image for s in batch])
            matches.append((queries + batch[0].index, rows, cosines))

    batch = []
    for sample in evalset.samples():
        batch.append(sample)
        if len(batch) == EVAL_BATCH:
            flush(batch)
            batch = []
    flush(batch)
    if vectors is None:
        return hashes.as_array(found), None
    joined = tuple(np.concatenate([m[i] for m in matches]) if matches else np.zeros(0) for i in range(3))
    return hashes.as_array(found), (joined[0].astype(np.int64), joined[1].astype(np.int64), joined[2])


def _embed(config: FilterConfig, work: WorkDir) -> str:
    """`wit embed` of the input with --checkpoint, into the scratch dir (resumed like it); its dir."""
    from train.model.shard_embeddings import embed_shards_dir

    out = work.scratch("embed")
    embed_shards_dir(config.checkpoint, config.shards, out, model=config.model, workers=min(config.workers, 8))
    return out


def _text_rules(table: pa.Table, config: FilterConfig, removal: Removal) -> None:
    if not (config.min_words or config.max_length or config.drop_file_names or config.drop_urls):
        return
    texts, urls = table["text"].to_pylist(), table["url"].to_pylist()
    for row in np.flatnonzero(removal.alive):
        found = textrules.first_rule(texts[row], urls[row], config.min_words, config.max_length,
                                     config.drop_file_names, config.drop_urls)
        if found is not None:
            removal.remove(int(row), "text", found[0], value=found[1])


def _clip_score(config: FilterConfig, embedded: pa.Table, removal: Removal) -> None:
    score = clipscore.scores(embedded)
    for row in np.flatnonzero(removal.alive & np.isnan(score)):
        removal.remove(int(row), "clip_score", "no_image_embedding")
    reason = "min_score" if config.min_score is not None else "keep_fraction"
    for row in np.flatnonzero(clipscore.below(score, removal.alive, config.min_score, config.keep_fraction)):
        removal.remove(int(row), "clip_score", reason, value=float(score[row]))


def _near_dup(table: pa.Table, radius: int, removal: Removal) -> None:
    """Among the samples kept so far, in uid order: a later one within `radius` of a kept one
    is removed (the match: the uid of the kept one)."""
    by_uid = pc.sort_indices(table["uid"]).to_numpy()
    rows, codes = _hashed(table["phash"].take(pa.array(by_uid)), removal.alive[by_uid])
    rows = by_uid[rows]
    by, distance = neardup.first_kept(codes, radius)
    uids = table["uid"]
    for i in np.flatnonzero(by >= 0):
        removal.remove(int(rows[i]), "near_dup", "phash", uids[int(rows[by[i]])].as_py(), float(distance[i]))


def _hashed(column: pa.ChunkedArray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, uint8[len(rows), 8]) of the alive rows with a hash."""
    rows = np.flatnonzero(alive & column.is_valid().to_numpy(zero_copy_only=False))
    codes = column.take(pa.array(rows)).combine_chunks()
    data = np.frombuffer(codes.buffers()[1], np.uint8)[codes.offset * 8:(codes.offset + len(rows)) * 8] \
        if len(rows) else np.zeros(0, np.uint8)
    return rows, data.reshape(len(rows), hashes.HASH_BYTES)


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
    sources: dict[str, object] = {}

    def copied():
        for tar, key, members in plan:
            f = sources.get(tar) or sources.setdefault(tar, open(tar, "rb"))
            try:
                yield key, [(ext, read_member(f, Member(key, offset, size))) for ext, offset, size in members]
            except EOFError as e:
                raise WitError(f"{tar}: changed while `wit filter` ran ({e})") from None

    name = shard_name(index)
    try:
        size, digest = write_shard_file(os.path.join(out, name), copied())
    finally:
        for f in sources.values():
            f.close()
    return index, {"name": name, "samples": len(plan), "bytes": size, "sha256": digest}


def _write_removed(path: str, uids: pa.ChunkedArray, removal: Removal) -> None:
    rows = np.flatnonzero(~removal.alive)
    table = pa.table({
        "uid": uids.take(pa.array(rows)),
        "filter": pa.array([FILTERS[removal.filter[r]] for r in rows], pa.string()),
        "reason": pa.array([removal.reason[r] for r in rows], pa.string()),
        "match": pa.array([removal.match[r] for r in rows], pa.string()),
        "value": pa.array(removal.value[rows], pa.float64(), mask=np.isnan(removal.value[rows])),
    }, schema=REMOVED_SCHEMA)
    write_parquet(path, table)


def _per_query(query_ids: pa.ChunkedArray) -> np.ndarray:
    flat = pc.list_flatten(query_ids).to_numpy(zero_copy_only=False) if len(query_ids) else np.zeros(0, np.int64)
    return np.bincount(flat.astype(np.int64)) if len(flat) else np.zeros(0, np.int64)


def _datacard(before: np.ndarray, after: np.ndarray, counts: dict) -> dict:
    """What each filter removed, and the samples per query before and after filtering
    (queries with samples only)."""
    after = np.pad(after, (0, len(before) - len(after)))
    present = np.flatnonzero(before)
    return {
        "totals": {"input_samples": counts["input_samples"], "kept_samples": counts["kept_samples"]},
        "removed": counts["removed"], "removed_by_reason": counts["removed_by_reason"],
        "queries_with_samples": {"before": int((before > 0).sum()), "after": int((after > 0).sum())},
        "per_query": {"query_id": present.tolist(), "before": before[present].tolist(),
                      "after": after[present].tolist()},
    }


def _fingerprint(evalset: EvalSet) -> dict:
    """What decides an evaluation set's images: its files' names, sizes and mtimes."""
    return describe_listing(evalset.path, evalset.folder.files if evalset.folder is not None else evalset.tars)

