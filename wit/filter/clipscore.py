"""CLIP score (DataComp): the cosine of a sample's image and text embeddings, here the dot
product of the L2-normalised vectors of an EMBED dir; kept above a minimum, or the top
fraction."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.filter.removal import Removed
from wit.formats.embeddings import read_embeddings
from wit.formats.errors import WitError


def scores(embedded: pa.Table) -> np.ndarray:
    """float64 score per row of `aligned` embeddings (NaN where the image could not be embedded)."""
    images, texts = matrix(embedded["image"]), matrix(embedded["text"])
    return np.einsum("ij,ij->i", images, texts, dtype=np.float64)


def aligned(embed_dir: str, shards_dir: str, uids: pa.Array) -> pa.Table:
    """The embeddings of `uids`, row for row; every uid must have one."""
    table = read_embeddings(embed_dir, shards_dir)
    rows = pc.index_in(uids, value_set=table["uid"])
    if rows.null_count:
        missing = pc.filter(uids, pc.is_null(rows))[0].as_py()
        raise WitError(f"{embed_dir}: no embedding of sample {missing} of {shards_dir}")
    return table.take(rows)


def matrix(column: pa.ChunkedArray) -> np.ndarray:
    """float32[n, dim] of a fixed-size list column, NaN rows for nulls."""
    array = column.combine_chunks()
    dim = array.type.list_size
    values = array.fill_null(pa.scalar([np.nan] * dim, array.type)) if array.null_count else array
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(array), dim)


def below(score: np.ndarray, alive: np.ndarray, min_score: float | None,
          keep_fraction: float | None) -> np.ndarray:
    """Which of the `alive` samples the score removes: below `min_score`, or outside the
    top `keep_fraction` of the alive samples with a score (ties by position, i.e. uid)."""
    scored = alive & ~np.isnan(score)
    if min_score is not None:
        return scored & (score < min_score)
    candidates = np.flatnonzero(scored)
    keep = int(round(keep_fraction * len(candidates)))
    ranked = candidates[np.argsort(-score[candidates], kind="stable")]
    removed = np.zeros(len(score), bool)
    removed[ranked[keep:]] = True
    return removed


class ClipScore:
    """The cosine of each sample's image and text embeddings (`embedded`, row for row):
    below `min_score`, or outside the top `keep_fraction` of the kept samples."""
    name = "clip_score"

    @classmethod
    def from_config(cls, config, inputs) -> "ClipScore | None":
        return cls(inputs.embedded, config.min_score, config.keep_fraction) if config.clip_score else None

    def __init__(self, embedded: pa.Table, min_score: float | None, keep_fraction: float | None) -> None:
        self.embedded, self.min_score, self.keep_fraction = embedded, min_score, keep_fraction

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        score = scores(self.embedded)
        missing = alive & np.isnan(score)
        for row in np.flatnonzero(missing):
            yield Removed(int(row), "no_image_embedding")
        reason = "min_score" if self.min_score is not None else "keep_fraction"
        for row in np.flatnonzero(below(score, alive & ~missing, self.min_score, self.keep_fraction)):
            yield Removed(int(row), reason, value=float(score[row]))
