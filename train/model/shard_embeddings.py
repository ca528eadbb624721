"""The EMBED dir of a SHARDS dir (`wit.formats.embeddings`): the engine of `wit embed`
(see `wit/embed/run.py` for what it does and its fingerprint), which `wit filter
--checkpoint` runs too. DataLoader workers read shards (each worker a shard at a time) and
hand over decoded uint8 images and tokens; the model embeds them in inference mode (bf16
weights, on a GPU with pinned memory); each shard's parquet file and unit marker are
written as soon as its last batch is embedded. Under torchrun or srun each rank embeds
shards rank::world into the one build dir, and rank 0 finishes it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from train import dist
from train.data.shards import Shard, list_shards
from train.data.stream import Sample, read_samples
from train.data import preprocess as images
from train.model.clip import Loaded, load_model, openclip_config
from train.model.encode import decode_all, embed_dim, encode_text
from wit import __version__
from wit.formats.atomic import file_sha256, write_json, write_parquet
from wit.formats.embeddings import SUMMARY, embedding_file, is_local, read_summary, schema, shards_sha256
from wit.formats.errors import WitError
from wit.formats.images import MAX_PIXELS
from wit.formats.workdir import WorkDir, claim

log = logging.getLogger("wit.embed")


def embed_shards_dir(checkpoint: str, shards_dir: str, out: str, model: str = "", batch_size: int = 256,
                     device: str = "auto", precision: str = "auto", workers: int = 0, max_pixels: int = MAX_PIXELS,
                     overwrite: bool = False, sizes: str | None = None, tokenizer: str = "") -> dict:
    """Build (or finish, or confirm) the EMBED dir `out` of a SHARDS dir, or of any shards
    `train.data.shards.list_shards` reads (a brace pattern, urls, `pipe:` commands, with
    `sizes`), with `wit embed`'s flags of the same names; return its summary (embed.json)."""
    started = time.time()
    local = is_local(shards_dir)
    shards_dir = os.path.normpath(shards_dir) if local else shards_dir
    shards = list_shards(shards_dir, sizes)
    missing = next((s.url for s in shards if is_local(s.url) and not os.path.isfile(s.url)), None)
    if missing:
        raise WitError(f"{missing}: shard listed in sizes.json is missing")
    names = Counter(os.path.basename(s.url) for s in shards)
    twice = next((name for name, n in names.items() if n > 1), None)
    if twice:
        raise WitError(f"{shards_dir}: two shards are named {twice}, and each shard's embeddings are named "
                       "after it; embed them separately")
    manifest = shards_sha256(shards_dir, [(s.url, s.samples) for s in shards])
    if model or tokenizer:
        if tokenizer and not model:
            raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")
        openclip_config(model, tokenizer)   # an unknown name or a bad tokenizer fails before anything is written
    checkpoint_sha256 = file_sha256(checkpoint, "checkpoint")
    world = dist.world_of(device)
    precision = precision if precision != "auto" else "bf16" if world.device.type == "cuda" else "fp32"
    fingerprint = {"checkpoint_sha256": checkpoint_sha256, "model": model, "manifest_sha256": manifest,
                   "precision": precision, "max_pixels": max_pixels,
                   **({"tokenizer_sha256": file_sha256(tokenizer, "tokenizer file")} if tokenizer else {})}
    inputs = (shards_dir,) if local and os.path.isdir(shards_dir) else ()
    with ExitStack() as stack:
        if not world.is_main:                # rank 0 claims (and may start the build dir) first
            dist.barrier(world)
        work = stack.enter_context(claim(out, "embed", fingerprint, overwrite, inputs=inputs,
                                         lock=world.is_main))
        if world.is_main:
            dist.barrier(world)
        dist.barrier(world)                  # every rank has claimed before any writes
        complete = work.complete()
        if complete is not None:
            return complete
        loaded = load_model(checkpoint, model, world.device, tokenizer)
        dim = embed_dim(loaded)
        shares = shards[world.rank::world.size]
        mine = [s for s in shares if work.done(_unit(s.url)) is None]
        if len(mine) < len(shares):
            log.info("rank %d: %d of its shards embedded before", world.rank, len(shares) - len(mine))
        embed_shards(loaded, mine, work, dim, batch_size, workers, max_pixels, world.device, precision)
        dist.barrier(world)
        if not world.is_main:
            dist.barrier(world)
            return read_summary(out)
        done = [work.done(_unit(s.url)) for s in shards]
        if any(d is None for d in done):
            raise WitError(f"{out}: some shards were not embedded; run the same command again")
        summary = {
            "tool": "wit embed", "version": __version__, "model": loaded.name, "dim": dim,
            "checkpoint": os.path.abspath(checkpoint), "checkpoint_sha256": checkpoint_sha256,
            "precision": precision, "max_pixels": max_pixels,
            "shards_dir": os.path.abspath(shards_dir) if local else shards_dir, "manifest_sha256": manifest,
            "shards": done,
            **{k: sum(d[k] for d in done) for k in ("samples", "images", "undecodable_images", "no_text")},
            "seconds": round(time.time() - started, 3),
        }
        write_json(work.path(SUMMARY), summary)
        work.finish(summary)
        dist.barrier(world)
    return summary


def _unit(url: str) -> str:
    """A shard's unit of work: its tar name."""
    return os.path.basename(url)


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
