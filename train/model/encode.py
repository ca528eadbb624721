"""The model library: images and texts into L2-normalised features, for evaluation,
search, `wit embed` and `wit filter` alike. Decoding with the eval centre crop, batching
through the model in inference mode (texts through the short-text path of a causal text
tower), and splitting the work over ranks."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import open_clip
import torch
from open_clip.transformer import text_global_pool
from tqdm import tqdm

from train.data import preprocess as images
from train.dist import World, gather_objects
from wit.formats.images import MAX_PIXELS, ImageRefused


@contextlib.contextmanager
def inference(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode under no_grad; its previous training mode restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(training)


def share(n: int, world: World) -> range:
    """The contiguous part of items 0..n-1 this rank handles (sizes differ by at most one)."""
    return range(n * world.rank // world.size, n * (world.rank + 1) // world.size)


def gather_rows(local: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order, on every rank (on the CPU)."""
    parts = [p for p in gather_objects(local.cpu(), world) if len(p)]
    return torch.cat(parts) if parts else local.cpu()


def decode_all(sources: Sequence[bytes | Path], size: int, max_pixels: int,
               progress: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Decode images (bytes, or files to read) into uint8 [n, 3, size, size] with the eval
    centre crop; returns them with the indices of `sources` that decoded (others are skipped)."""
    def one(source: bytes | Path) -> torch.Tensor | None:
        try:
            data = source.read_bytes() if isinstance(source, Path) else source
            return images.decode(data, size, max_pixels)
        except (ImageRefused, OSError):
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:   # PIL releases the GIL
        decoded = list(tqdm(pool.map(one, sources), total=len(sources), desc="decode", unit="img",
                            disable=not progress))
    kept = [i for i, image in enumerate(decoded) if image is not None]
    stacked = torch.stack([decoded[i] for i in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return stacked, kept


@dataclass(frozen=True)
class Encoder:
    """Runs a model over prepared inputs in batches; call it under `inference`.
    Features come back L2-normalised, float32, on the CPU."""
    device: torch.device
    batch_size: int
    mean: tuple
    std: tuple
    progress: bool = False

    def images(self, model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [n, 3, S, S] -> [n, D]."""
        out = []
        for start in tqdm(range(0, len(pixels), self.batch_size), desc="images", unit="batch",
                          disable=not self.progress):
            batch = images.normalize(pixels[start:start + self.batch_size].to(self.device), self.mean, self.std)
            out.append(model.encode_image(batch, normalize=True).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def texts(self, model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [n, context] -> [n, D]."""
        out = []
        for start in tqdm(range(0, len(tokens), self.batch_size), desc="texts", unit="batch",
                          disable=not self.progress):
            features = encode_text(model, tokens[start:start + self.batch_size], self.device)
            out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0)


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


def embed_dim(loaded) -> int:
    """The width of a loaded model's features (`train.model.clip.Loaded`)."""
    return int(open_clip.get_model_config(loaded.name)["embed_dim"])


def image_embeddings(loaded, images: Sequence[bytes], batch_size: int = 256, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """float32 [n, dim] L2-normalised embeddings of image bytes, a batch at a time (NaN
    rows for images that cannot be decoded)."""
    device = next(loaded.model.parameters()).device
    encoder = Encoder(device, batch_size, loaded.mean, loaded.std)
    out = np.full((len(images), embed_dim(loaded)), np.nan, np.float32)
    with inference(loaded.model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels, kept = decode_all(images[start:start + batch_size], loaded.image_size, max_pixels)
            if kept:
                out[[start + i for i in kept]] = encoder.images(loaded.model, pixels).numpy()
    return out
