"""Turning images and texts into L2-normalised features: decoding (eval centre crop),
batching through the model in inference mode, and splitting the work over ranks."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from train import images
from train.dist import World, gather_objects
from wit.formats.images import ImageRefused


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
            batch = tokens[start:start + self.batch_size].to(self.device)
            out.append(model.encode_text(batch, normalize=True).float().cpu())
        return torch.cat(out) if out else torch.empty(0)
