"""`wit embed`: the L2-normalised image and text embeddings of every sample of a SHARDS dir
(the EMBED dir of `wit.formats.embeddings`), with a trainer checkpoint or an OpenCLIP
state-dict file whose architecture `--model` names.

One unit of work per shard (its parquet file, then its marker), so a rerun does only the
shards without a marker. DataLoader worker processes read the shards (a shard per worker
at a time), decode the images with the eval centre crop (`train.images`) and tokenise
the captions while the model runs: in inference mode, bf16 weights and pinned memory on
a GPU, fp32 on the CPU. A causal text tower pooled at the end token (CLIP's) runs only on
the positions up to the batch's last end token: the padding after it never reaches a
pooled feature, so the result is the same for less work. Under torchrun or srun each rank
embeds shards rank::world into the one build dir, and rank 0 finishes it.

The fingerprint is the checkpoint's sha256 (hashing reads about 1 GB/s, little next to
embedding, and a copied or touched file stays the same), `--model`, the manifest's
sha256, the precision and the pixel cap; batch size, workers and device change the
output only by float rounding and are left out.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass

from wit import __version__
from wit.flags import option
from wit.formats.atomic import file_sha256, write_json
from wit.formats.embeddings import SUMMARY, manifest_sha256, read_summary
from wit.formats.errors import WitError
from wit.formats.images import MAX_PIXELS

log = logging.getLogger("wit.embed")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class EmbedConfig:
    checkpoint: str = option(help="a trainer checkpoint or an OpenCLIP pretrained file", metavar="FILE")
    shards: str = option(help="SHARDS dir (wit shard)", metavar="DIR")
    out: str = option(help="EMBED output directory", metavar="DIR")
    model: str = option("", "the architecture of an OpenCLIP pretrained file: a built-in name (e.g. ViT-B-32) "
                            "or a model config .json (a run's RUN/<name>.json); not for trainer checkpoints",
                        metavar="NAME|FILE")
    batch_size: int = option(256, "samples per model call")
    device: str = option("auto", "cpu, cuda or cuda:N; auto: cuda when available (under torchrun: the local GPU)")
    precision: str = option("auto", "bf16 (the weights cast: about 3x on CPUs with AMX) or fp32; auto: bf16 on a "
                                    "GPU, fp32 on the CPU")
    workers: int = option(min(8, os.cpu_count() or 1), "decoding worker processes (0: decode in this process)")
    max_pixels: int = option(MAX_PIXELS, "larger images get a null embedding")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise WitError(f"--precision: unknown {self.precision!r} (choose from: {', '.join(PRECISIONS)})")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise WitError(f"--device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        for name in ("batch_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise WitError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.workers < 0:
            raise WitError("--workers: must be at least 0")


def run(config: EmbedConfig) -> dict:
    """Build (or finish, or confirm) the EMBED dir; return its summary (embed.json)."""
    from train import dist
    from train.shards import list_shards
    from wit.formats.workdir import claim

    started = time.time()
    shards_dir = os.path.normpath(config.shards)
    manifest = manifest_sha256(shards_dir)
    shards = list_shards(shards_dir)
    missing = next((s.url for s in shards if not os.path.isfile(s.url)), None)
    if missing:
        raise WitError(f"{missing}: shard listed in sizes.json is missing")
    if config.model:
        from train.model import openclip_config

        openclip_config(config.model)        # an unknown name fails before anything is written
    checkpoint_sha256 = file_sha256(config.checkpoint, "checkpoint")
    world = _world(config.device)
    precision = config.precision if config.precision != "auto" else "bf16" if world.device.type == "cuda" else "fp32"
    fingerprint = {"checkpoint_sha256": checkpoint_sha256, "model": config.model, "manifest_sha256": manifest,
                   "precision": precision, "max_pixels": config.max_pixels}
    with ExitStack() as stack:
        if not world.is_main:                # rank 0 claims (and may start the build dir) first
            dist.barrier(world)
        work = stack.enter_context(claim(config.out, "embed", fingerprint, config.overwrite, inputs=(shards_dir,),
                                             lock=world.is_main))
        if world.is_main:
            dist.barrier(world)
        dist.barrier(world)                  # every rank has claimed before any writes
        complete = work.complete()
        if complete is not None:
            return complete
        loaded = _load(config.checkpoint, config.model, world.device)
        dim = _dim(loaded)
        shares = shards[world.rank::world.size]
        mine = [s for s in shares if work.done(_unit(s.url)) is None]
        if len(mine) < len(shares):
            log.info("rank %d: %d of its shards embedded before", world.rank, len(shares) - len(mine))
        from train.embedder import embed_shards

        embed_shards(loaded, mine, work, dim, config.batch_size, config.workers, config.max_pixels,
                     world.device, precision)
        dist.barrier(world)
        if not world.is_main:
            dist.barrier(world)
            return read_summary(config.out)
        done = [work.done(_unit(s.url)) for s in shards]
        if any(d is None for d in done):
            raise WitError(f"{config.out}: some shards were not embedded; run the same command again")
        summary = {
            "tool": "wit embed", "version": __version__, "model": loaded.name, "dim": dim,
            "checkpoint": os.path.abspath(config.checkpoint), "checkpoint_sha256": checkpoint_sha256,
            "precision": precision, "max_pixels": config.max_pixels,
            "shards_dir": os.path.abspath(shards_dir), "manifest_sha256": manifest, "shards": done,
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


def _world(device: str):
    """This process's rank and device: torchrun's or srun's process group, else one process."""
    import torch

    from train import dist

    if dist.launch_env()[1] > 1:
        return dist.init()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WitError(f"--device {device}: no GPU is available")
    return dist.World(0, 1, 0, torch.device(device))


def _load(checkpoint: str, model: str, device):
    """The model of a checkpoint (an OpenCLIP file of architecture `model`, when given),
    without OpenCLIP's INFO lines about finding its tokenizer."""
    from train.model import load, load_openclip

    root = logging.getLogger()   # OpenCLIP logs on the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        return load_openclip(checkpoint, model, device) if model else load(checkpoint, device)
    finally:
        root.setLevel(level)


def _dim(loaded) -> int:
    import open_clip

    return int(open_clip.get_model_config(loaded.name)["embed_dim"])


def load_model(checkpoint: str, model: str = "", device: str = "auto"):
    """The model `wit embed` would use for these flags (`train.model.Loaded`)."""
    return _load(checkpoint, model, _world(device).device)


def image_embeddings(loaded, images, batch_size: int = 256, max_pixels: int = MAX_PIXELS):
    """float32 [n, dim] L2-normalised embeddings of image bytes, a batch at a time (NaN
    rows for images that cannot be decoded)."""
    import numpy as np
    import torch

    from train.features import Encoder, decode_all, inference

    device = next(loaded.model.parameters()).device
    encoder = Encoder(device, batch_size, loaded.mean, loaded.std)
    out = np.full((len(images), _dim(loaded)), np.nan, np.float32)
    with inference(loaded.model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels, kept = decode_all(images[start:start + batch_size], loaded.image_size, max_pixels)
            if kept:
                out[[start + i for i in kept]] = encoder.images(loaded.model, pixels).numpy()
    return out
