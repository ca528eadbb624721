"""The filters of `wit filter`, in the order they run, and what they may need, made once.

Each filter is one module with one class of the shape `removal.Filter` and a
`from_config(config, inputs)` that gives it (or None when its flags are off); adding a
filter is writing that module and listing its class in FILTERS. Counting, removed.parquet,
annotations.parquet and the data card are `removal.Removal`'s, for every filter alike."""

from __future__ import annotations

from concurrent.futures import Executor
from functools import cached_property

import numpy as np
import pyarrow as pa

from wit.filter.clipscore import ClipScore, aligned, matrix
from wit.filter.decontaminate import Decontaminate
from wit.filter.heads import Head, Heads
from wit.filter.imageclusters import ImageClusters
from wit.filter.imagesize import ImageSize
from wit.filter.language import Language
from wit.filter.neardup import NearDup
from wit.filter.semdedup import SemanticDedup
from wit.filter.textrules import TextRules
from wit.formats.errors import WitError
from wit.formats.evalsets import EvalSet

# the order they run in, each judging only what the ones before kept: decontamination first
# (its report counts every contaminated sample), the cheap rules next, CLIP score before the
# image clusters (so that the two together keep DataComp's intersection), deduplication last
FILTERS = (Decontaminate, Language, TextRules, ImageSize, Heads, ClipScore, ImageClusters, SemanticDedup, NearDup)


class Inputs:
    """What the filters may need, each made on first use and shared: the sample table, the
    embeddings row for row, the model, the evaluation sets, the heads, the process pool."""

    def __init__(self, config, table: pa.Table, embed_dir: str, evalsets: list[EvalSet], pool: Executor) -> None:
        self.config, self.table, self.embed_dir, self.evalsets, self.pool = config, table, embed_dir, evalsets, pool

    @cached_property
    def embedded(self) -> pa.Table:
        """The embeddings of the samples, row for row (uid, image, text)."""
        if not self.embed_dir:
            raise WitError("this filter needs embeddings: give --embeddings DIR (wit embed) or --checkpoint FILE")
        return aligned(self.embed_dir, self.config.shards, self.table["uid"])

    @cached_property
    def image_vectors(self) -> np.ndarray:
        """float32[n, dim]: the image embeddings, row for row, NaN rows where there is none."""
        return matrix(self.embedded["image"])

    @cached_property
    def model(self):
        """--checkpoint loaded (train.model.clip.Loaded), on the local device."""
        from train.dist import local_device
        from train.model.clip import load_model

        c = self.config
        return load_model(c.checkpoint, c.model, local_device(), c.tokenizer)

    @cached_property
    def heads(self) -> list[Head]:
        heads = [Head(path) for path in self.config.head]
        names = [h.name for h in heads]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise WitError(f"--head: two heads named {twice[0]!r} (a head is named by its file name)")
        return heads


def chosen(config, inputs: Inputs) -> list:
    """The filters the config turns on, in FILTERS' order."""
    return [f for f in (cls.from_config(config, inputs) for cls in FILTERS) if f is not None]
