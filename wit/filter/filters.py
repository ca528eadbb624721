"""The filters of `wit filter`, each a `removal.Filter`: decontamination (pHash, and
embedding cosine with a model), text rules, CLIP score and near-duplicates."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.filter import clipscore, hashes, neardup, textrules
from wit.filter.removal import Removed
from wit.formats.errors import WitError
from wit.formats.evalsets import EvalSet

EVAL_BATCH = 512


def eval_name(path: str) -> str:
    """An evaluation set's name in contamination.json and removed.parquet: its dir name."""
    return os.path.basename(os.path.normpath(path))


class TextRules:
    name = "text"

    def __init__(self, min_words: int, max_length: int, drop_file_names: bool, drop_urls: bool) -> None:
        self.rules = (min_words, max_length, drop_file_names, drop_urls)

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        texts, urls = samples["text"].to_pylist(), samples["url"].to_pylist()
        for row in np.flatnonzero(alive):
            found = textrules.first_rule(texts[row], urls[row], *self.rules)
            if found is not None:
                yield Removed(int(row), found[0], value=found[1])


class ClipScore:
    """The cosine of each sample's image and text embeddings (`embedded`, row for row):
    below `min_score`, or outside the top `keep_fraction` of the kept samples."""
    name = "clip_score"

    def __init__(self, embedded: pa.Table, min_score: float | None, keep_fraction: float | None) -> None:
        self.embedded, self.min_score, self.keep_fraction = embedded, min_score, keep_fraction

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        score = clipscore.scores(self.embedded)
        missing = alive & np.isnan(score)
        for row in np.flatnonzero(missing):
            yield Removed(int(row), "no_image_embedding")
        reason = "min_score" if self.min_score is not None else "keep_fraction"
        for row in np.flatnonzero(clipscore.below(score, alive & ~missing, self.min_score, self.keep_fraction)):
            yield Removed(int(row), reason, value=float(score[row]))


class NearDup:
    """Among the samples kept so far, in uid order: a later one within `radius` of a kept one
    is removed (the match: the uid of the kept one)."""
    name = "near_dup"

    def __init__(self, radius: int) -> None:
        self.radius = radius

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        by_uid = pc.sort_indices(samples["uid"]).to_numpy()
        rows, codes = hashed(samples["phash"].take(pa.array(by_uid)), alive[by_uid])
        rows = by_uid[rows]
        by, distance = neardup.first_kept(codes, self.radius)
        uids = samples["uid"]
        for i in np.flatnonzero(by >= 0):
            yield Removed(int(rows[i]), "phash", uids[int(rows[by[i]])].as_py(), float(distance[i]))


class Decontaminate:
    """The data images within `radius` of an evaluation image (and, with `vectors`, those
    at or above the cosine threshold of one) are removed. `report`, after a call: per set,
    its images, how many matched (by each detector and in all), and the uids removed (the
    match: the nearest evaluation image, pHash first)."""
    name = "decontaminate"

    def __init__(self, evalsets: list[EvalSet], radius: int, pool: Executor, vectors: "EvalVectors | None") -> None:
        self.evalsets, self.radius, self.pool, self.vectors = evalsets, radius, pool, vectors
        self.report: dict = {}

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        rows, codes = hashed(samples["phash"], np.ones(samples.num_rows, bool))
        index = neardup.HashIndex(codes, self.radius)
        uids = samples["uid"]
        for evalset in self.evalsets:
            name = eval_name(evalset.path)
            eval_codes, by_vector = self._eval_hashes(evalset)
            queries, labels, distances = index.search(eval_codes)
            found = [("phash", queries, rows[labels], distances, np.lexsort((queries, distances, labels)))]
            if self.vectors is not None:
                v_queries, v_rows, cosines = by_vector
                found.append(("embedding", v_queries, v_rows, cosines, np.lexsort((v_queries, -cosines, v_rows))))
            removed = []
            for reason, q_of, row_of, value_of, order in found:
                first = np.unique(row_of[order], return_index=True)[1]   # per data row: the nearest match
                for q, row, value in zip(q_of[order][first], row_of[order][first], value_of[order][first]):
                    if alive[int(row)]:
                        alive[int(row)] = False
                        yield Removed(int(row), reason, f"{name}:{int(q)}", float(value))
                        removed.append(uids[int(row)].as_py())
            matched = {reason: np.unique(q_of) for reason, q_of, *_ in found}
            self.report[name] = {"path": os.path.abspath(evalset.path), "images": len(eval_codes),
                                 "matched_images": int(len(np.unique(np.concatenate(list(matched.values()))))),
                                 "matched_images_by": {reason: int(len(q)) for reason, q in matched.items()},
                                 "removed": len(removed), "removed_uids": sorted(removed)}

    def _eval_hashes(self, evalset: EvalSet) -> tuple[np.ndarray, tuple | None]:
        """uint8[n, 8]: the pHash of every image of an evaluation set (decoded in the pool);
        with `vectors`, its embedding matches too (query, data row, cosine)."""
        found: list[bytes] = []
        matches: list[tuple] = []

        def flush(batch: list) -> None:
            for sample, code in zip(batch, self.pool.map(hashes.phash, [s.image for s in batch])):
                if code is None:
                    raise WitError(f"{evalset.path}: image {sample.index} cannot be decoded")
                found.append(code)
            if self.vectors is not None and batch:
                queries, rows, cosines = self.vectors.matches([s.image for s in batch])
                matches.append((queries + batch[0].index, rows, cosines))

        batch = []
        for sample in evalset.samples():
            batch.append(sample)
            if len(batch) == EVAL_BATCH:
                flush(batch)
                batch = []
        flush(batch)
        if self.vectors is None:
            return hashes.as_array(found), None
        joined = tuple(np.concatenate([m[i] for m in matches]) if matches else np.zeros(0) for i in range(3))
        return hashes.as_array(found), (joined[0].astype(np.int64), joined[1].astype(np.int64), joined[2])


class EvalVectors:
    """Decontamination by embedding cosine: the data's image embeddings (row for row, NaN
    where there is none) in a faiss inner-product index, and the model that embeds the
    evaluation images."""

    def __init__(self, embedded: pa.Table, checkpoint: str, model: str, threshold: float, tokenizer: str = "") -> None:
        import faiss

        from train.dist import local_device
        from train.model.clip import load_model

        images = clipscore.matrix(embedded["image"])
        self.rows = np.flatnonzero(~np.isnan(images[:, 0]))
        self.index = faiss.IndexFlatIP(images.shape[1])
        self.index.add(np.ascontiguousarray(images[self.rows]))
        self.loaded = load_model(checkpoint, model, local_device(), tokenizer)
        self.threshold = threshold

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


def hashed(column: pa.ChunkedArray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, uint8[len(rows), 8]) of the alive rows with a hash."""
    rows = np.flatnonzero(alive & column.is_valid().to_numpy(zero_copy_only=False))
    codes = column.take(pa.array(rows)).combine_chunks()
    data = np.frombuffer(codes.buffers()[1], np.uint8)[codes.offset * 8:(codes.offset + len(rows)) * 8] \
        if len(rows) else np.zeros(0, np.uint8)
    return rows, data.reshape(len(rows), hashes.HASH_BYTES)
