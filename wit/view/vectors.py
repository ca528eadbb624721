"""The image vectors of an EMBED dir, searched by cosine (faiss inner products of the
L2-normalised vectors), and the text encoder of its model.

The vectors are copied once into the cache dir, in sample-id order with each row's sample
id (`vectors-<embed.json sha256>.f32` and `.ids.npy`), one EMBED shard at a time, so
building never holds more than one EMBED shard. Up to EXACT_LIMIT vectors the search is
exact: one matrix-vector product over the memory-mapped file (BLAS on every core, no copy
in memory; for one query that is faster than faiss's IndexFlatIP, which scans on one
core). Above it, a faiss IVF index with 8-bit scalar quantisation (built once into the
cache, searched with NPROBE lists) keeps the memory at about a quarter of the vectors and
a query at a fraction of a full scan (approximate).
"""

from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit.formats.atomic import atomic_open, atomic_path, file_sha256, write_json
from wit.formats.embeddings import embedding_file
from wit.formats.errors import WitError
from wit.view.index import Index
from wit.view.sources import Embedded

EXACT_LIMIT = 2_000_000
NPROBE = 64
TRAIN_SAMPLE = 100_000   # vectors the IVF's k-means is trained on (at least 32 a list)


def build(embedded: Embedded, index: Index, cache: str) -> str:
    """The cached vectors' base path (`.f32`, `.ids.npy`, `.json`), copied when missing."""
    base = os.path.join(cache, f"vectors-{embedded.summary_sha256[:32]}")
    if os.path.exists(base + ".json"):
        return base
    dim = embedded.summary["dim"]
    ids: list[np.ndarray] = []
    count = 0
    with atomic_open(base + ".f32") as out:
        for shard, entry in enumerate(embedded.summary["shards"]):
            path = os.path.join(embedded.root, embedding_file(str(entry["name"])))
            try:
                table = pq.read_table(path, columns=["uid", "image"])
            except (OSError, ValueError) as e:
                raise WitError(f"{path}: cannot read the embeddings ({e})") from None
            keys = dict((key, sample) for sample, key in index.shard_keys(shard))
            valid = pc.is_valid(table["image"]).to_numpy(zero_copy_only=False)
            uids = table["uid"].to_pylist()
            missing = next((u for u, v in zip(uids, valid) if v and u not in keys), None)
            if missing is not None:
                raise WitError(f"{path}: uid {missing!r} is not a sample of shard {entry['name']} (embeddings of "
                               "other shards?)")
            rows = table["image"].filter(valid)
            vectors = pc.list_flatten(rows).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            vectors = vectors.reshape(-1, dim)
            out.write(np.ascontiguousarray(vectors).tobytes())
            ids.append(np.array([keys[u] for u, v in zip(uids, valid) if v], dtype=np.int64))
            count += len(vectors)
        order = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        if len(order) > 1 and not (np.diff(order) > 0).all():
            raise WitError(f"{embedded.root}: embeddings out of the shards' sample order")
    with atomic_open(base + ".ids.npy") as f:
        np.save(f, order)
    write_json(base + ".json", {"dim": dim, "count": count, "embeddings": embedded.root})   # last: the marker
    print(f"wit view: {embedded.root}: {count:,} image vectors of dim {dim} cached", file=sys.stderr, flush=True)
    return base


class Vectors:
    """Nearest image vectors by cosine; ids are sample ids."""

    def __init__(self, base: str, exact_limit: int = EXACT_LIMIT) -> None:
        with open(base + ".json") as f:
            info = json.load(f)
        self.dim, self.count = info["dim"], info["count"]
        self.ids = np.load(base + ".ids.npy")
        self.vectors = np.memmap(base + ".f32", np.float32, "r", shape=(self.count, self.dim)) \
            if self.count else np.zeros((0, self.dim), np.float32)
        self.exact = self.count <= exact_limit
        self.faiss = None if self.exact else _ivf(base, self.vectors)
        self._lock = threading.Lock()

    def vector(self, sample: int) -> np.ndarray | None:
        row = int(np.searchsorted(self.ids, sample))
        if row >= self.count or self.ids[row] != sample:
            return None
        return np.array(self.vectors[row], dtype=np.float32)

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(sample id, cosine) of the k nearest image vectors, nearest first."""
        if not self.count:
            return []
        query, k = np.ascontiguousarray(query, np.float32), min(k, self.count)
        with self._lock:   # one search at a time: each already uses every core
            if self.faiss is not None:
                scores, rows = self.faiss.search(query[None], k)
                return [(int(self.ids[r]), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
            scores = self.vectors @ query
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.ids[r]), float(scores[r])) for r in top]


def _ivf(base: str, vectors: np.ndarray):
    import faiss

    path = base + ".ivf"
    if os.path.exists(path):
        index = faiss.read_index(path)
    else:
        count, dim = vectors.shape
        lists = min(65_536, max(1, int(np.sqrt(count))))
        print(f"wit view: building an IVF index of {count:,} vectors ({lists:,} lists)...", file=sys.stderr, flush=True)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(count, min(count, max(TRAIN_SAMPLE, 32 * lists)), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        for start in range(0, count, 1 << 18):
            index.add(np.ascontiguousarray(vectors[start:start + (1 << 18)]))
        with atomic_path(path) as temporary:
            faiss.write_index(index, temporary)
    index.nprobe = NPROBE
    return index


class TextEncoder:
    """The text tower of the model the EMBED dir was made with (checked by the checkpoint's
    sha256), loaded once; `encode(text)` gives the L2-normalised [dim] vector."""

    def __init__(self, checkpoint: str, model: str, tokenizer: str, embedded: Embedded) -> None:
        from train.model.clip import load_model

        recorded = embedded.summary.get("checkpoint_sha256")
        if file_sha256(checkpoint, "checkpoint") != recorded:
            raise WitError(f"{checkpoint}: not the checkpoint the embeddings of {embedded.root} were made with "
                           f"({embedded.summary.get('checkpoint')}); text search needs the same model")
        self.loaded = load_model(checkpoint, model, "cpu", tokenizer)
        self._lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        import torch
        from train.model.encode import Encoder, inference

        loaded = self.loaded
        with self._lock, inference(loaded.model):
            encoder = Encoder(torch.device("cpu"), 1, loaded.mean, loaded.std)
            return encoder.texts(loaded.model, loaded.tokenizer([text]))[0].numpy()
