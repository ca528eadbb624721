"""The loop of `wit embed`: DataLoader workers read shards (each worker a shard at a time)
and hand over decoded uint8 images and tokens; the model embeds them in inference mode
(bf16 weights, on a GPU with pinned memory); each shard's parquet file and unit marker
are written as soon as its last batch is embedded."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter

import numpy as np
import open_clip
import pyarrow as pa
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from train import images
from train.data import Sample, read_samples
from train.features import decode_all
from train.model import Loaded
from train.shards import Shard
from wit.formats.atomic import write_parquet
from wit.formats.embeddings import embedding_file, schema
from wit.formats.errors import WitError
from wit.formats.workdir import WorkDir

log = logging.getLogger("wit.embed")


def embed_shards(loaded: Loaded, shards: list[Shard], work: WorkDir, dim: int, batch_size: int, workers: int,
                 max_pixels: int, device: torch.device, precision: str) -> None:
    """Embed `shards` into `work`: per shard its parquet file, then its marker (unit: the tar name)."""
    if not shards:
        return
    workers = min(workers, len(shards))
    batches = ShardBatches(shards, batch_size, loaded.image_size, max_pixels, loaded.tokenizer)
    loader = DataLoader(batches, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    if precision == "bf16":   # inference only: bf16 weights (not autocast), so matmuls run in bf16 on AMX CPUs too
        loaded.model.to(torch.bfloat16)
    parts: dict[int, list[dict]] = {}
    with tqdm(total=sum(s.samples for s in shards), desc="embed", unit="img", mininterval=1.0,
              dynamic_ncols=True, file=sys.stderr) as bar, torch.inference_mode():
        for batch in loader:
            if "error" in batch:
                raise WitError(batch["error"])
            parts.setdefault(batch["shard"], []).append(_encode(loaded, batch, device, dim))
            bar.update(len(batch["uids"]))
            if batch["last"]:
                url = shards[batch["shard"]].url
                counters = _write(work, url, parts.pop(batch["shard"]), dim, batch["truncated"])
                work.mark_done(os.path.basename(url), counters, [embedding_file(url)])


class ShardBatches(IterableDataset):
    """The batches of some shards, in shard order, each shard's last one marked: the uids,
    the decoded images (uint8, eval centre crop) and tokens, and which rows of the batch
    they belong to. DataLoader worker w takes shards w, w + workers, ..."""

    def __init__(self, shards: list[Shard], batch_size: int, image_size: int, max_pixels: int, tokenizer) -> None:
        self.shards, self.batch_size, self.image_size = shards, batch_size, image_size
        self.max_pixels, self.tokenizer = max_pixels, tokenizer

    def __iter__(self):
        info = get_worker_info()
        first, step = (info.id, info.num_workers) if info else (0, 1)
        for position in range(first, len(self.shards), step):
            counts: Counter = Counter()
            batch: list[Sample] = []
            try:
                for sample in read_samples(self.shards[position].url, counts=counts):
                    batch.append(sample)
                    if len(batch) == self.batch_size:
                        yield self._prepare(position, batch, False, False)
                        batch = []
            except WitError as e:   # handed over as data: a worker's exception comes back as a traceback
                yield {"error": str(e)}
                return
            yield self._prepare(position, batch, True, counts["truncated_shards"] > 0)

    def _prepare(self, position: int, samples: list[Sample], last: bool, truncated: bool) -> dict:
        with_image = [i for i, s in enumerate(samples) if s.image is not None]
        pixels, kept = decode_all([samples[i].image for i in with_image], self.image_size, self.max_pixels)
        with_text = [i for i, s in enumerate(samples) if s.text is not None]
        tokens = self.tokenizer([samples[i].text for i in with_text]) if with_text else torch.zeros(0, 1, dtype=torch.long)
        return {"shard": position, "last": last, "truncated": truncated, "uids": [s.key for s in samples],
                "pixels": pixels, "image_rows": torch.tensor([with_image[i] for i in kept], dtype=torch.long),
                "tokens": tokens, "text_rows": torch.tensor(with_text, dtype=torch.long)}


def _encode(loaded: Loaded, batch: dict, device: torch.device, dim: int) -> dict:
    """A batch's embeddings: float32 [n, dim] per kind (zeros where null) and validity masks."""
    n = len(batch["uids"])
    out = {"uids": batch["uids"]}
    for kind in ("image", "text"):
        rows = batch[f"{kind}_rows"].numpy()
        values, valid = np.zeros((n, dim), np.float32), np.zeros(n, bool)
        if len(rows):
            if kind == "image":
                pixels = images.normalize(batch["pixels"].to(device, non_blocking=True), loaded.mean,
                                          loaded.std).to(next(loaded.model.parameters()).dtype)
                features = loaded.model.encode_image(pixels)
            else:
                features = encode_text(loaded.model, batch["tokens"], device)
            values[rows] = F.normalize(features.float(), dim=-1).cpu().numpy()
            valid[rows] = True
        out[kind], out[f"{kind}_valid"] = values, valid
    return out


def encode_text(model: torch.nn.Module, tokens: torch.Tensor, device: torch.device, chunk: int | None = None) -> torch.Tensor:
    """`model.encode_text` (not normalised) of CPU `tokens`. CLIP's causal text tower pooled
    at the end token runs on chunks of captions of about the same length, each only up to
    its last end token: causal attention keeps the padding after a caption's end from its
    pooled feature, so the features are the same for less work. (The end token has the
    highest id; that is how OpenCLIP's `argmax` pooling finds it.) Chunks: 32 captions on
    the CPU, 256 on a GPU (where a call costs more than a few positions)."""
    chunk = chunk or (32 if device.type == "cpu" else 256)
    if not (isinstance(model, open_clip.CLIP) and model.text_pool_type == "argmax" and model.attn_mask is not None):
        return model.encode_text(tokens.to(device, non_blocking=True))
    ends = tokens.argmax(dim=-1)
    order = torch.argsort(ends, stable=True)
    parts = [_short_text(model, tokens[rows, :int(ends[rows[-1]]) + 1].to(device, non_blocking=True))
             for rows in order.split(chunk)]
    return torch.cat(parts)[torch.argsort(order).to(device)]


def _short_text(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text on fewer positions than the context (OpenCLIP's adds all of them)."""
    n = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _write(work: WorkDir, url: str, parts: list[dict], dim: int, truncated: bool) -> dict:
    """A shard's parquet file from its batches; its counters for embed.json."""
    uids = [u for p in parts for u in p["uids"]]
    columns, found = {}, {}
    for kind in ("image", "text"):
        values = np.concatenate([p[kind] for p in parts]).reshape(-1)
        valid = np.concatenate([p[f"{kind}_valid"] for p in parts])
        columns[kind] = pa.FixedSizeListArray.from_arrays(pa.array(values), dim, mask=pa.array(~valid))
        found[kind] = int(valid.sum())
    table = pa.table({"uid": pa.array(uids, pa.string()), **columns}, schema=schema(dim))
    write_parquet(work.path(embedding_file(url)), table)
    if truncated:
        log.warning("%s: damaged; embedded the %d samples before the damage", url, len(uids))
    return {"name": os.path.basename(url), "samples": len(uids), "images": found["image"],
            "undecodable_images": len(uids) - found["image"], "no_text": len(uids) - found["text"],
            "truncated": truncated}
