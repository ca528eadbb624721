"""Decontamination: the data images within a pHash Hamming radius of an evaluation image
(and, with a model, those at or above a cosine with one) are removed."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Iterator

import numpy as np
import pyarrow as pa

from wit.filter import clipscore, hashes, neardup
from wit.filter.removal import Removed
from wit.formats.errors import WitError
from wit.formats.evalsets import EvalSet

EVAL_BATCH = 512


def eval_name(path: str) -> str:
    """An evaluation set's name in contamination.json and removed.parquet: its dir name."""
    return os.path.basename(os.path.normpath(path))


class Decontaminate:
    """The data images within `radius` of an evaluation image (and, with `vectors`, those
    at or above the cosine threshold of one) are removed. `report`, after a call: per set,
    its images, how many matched (by each detector and in all), and the uids removed (the
    match: the nearest evaluation image, pHash first)."""
    name = "decontaminate"

    @classmethod
    def from_config(cls, config, inputs) -> "Decontaminate | None":
        if not config.decontaminate:
            return None
        vectors = EvalVectors(inputs.embedded, inputs.model, config.eval_cosine) if config.checkpoint else None
        return cls(inputs.evalsets, config.hamming, inputs.pool, vectors)

    def __init__(self, evalsets: list[EvalSet], radius: int, pool: Executor, vectors: "EvalVectors | None") -> None:
        self.evalsets, self.radius, self.pool, self.vectors = evalsets, radius, pool, vectors
        self.report: dict = {}

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        rows, codes = hashes.hashed(samples["phash"], np.ones(samples.num_rows, bool))
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

    def __init__(self, embedded: pa.Table, loaded, threshold: float) -> None:
        import faiss

        images = clipscore.matrix(embedded["image"])
        self.rows = np.flatnonzero(~np.isnan(images[:, 0]))
        self.index = faiss.IndexFlatIP(images.shape[1])
        self.index.add(np.ascontiguousarray(images[self.rows]))
        self.loaded = loaded
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
