"""Inputs of the evaluation and search tests: checkpoints of the tiny model (random, or
fitted to tell colours apart) and ImageFolders of drawn images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tests.train.conftest import COLOURS, TINY_MODEL
from train.data import preprocess as images
from train.model import clip as models
from train.config import ModelConfig, TrainConfig

TINY = ModelConfig("wit-test-tiny", TINY_MODEL)


def save_checkpoint(model: torch.nn.Module, path: Path, step: int) -> Path:
    """What `train.model.clip.load` needs of a trainer checkpoint."""
    config = TrainConfig(shards="x", run_dir="y", model=TINY).to_dict()
    torch.save({"state_dict": model.state_dict(), "config": config, "position": {"step": step}}, path)
    return path


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """The tiny model, randomly initialised from `seed`."""
    torch.manual_seed(seed)
    return save_checkpoint(models.create(TINY), path, 0)


def write_trained_checkpoint(path: Path, steps: int = 10, seed: int = 0) -> Path:
    """The tiny model fitted for a few steps to tell the colours of drawn images apart by the
    captions `a photo of a <colour> colour.` / `a drawing of the <colour> colour`."""
    torch.manual_seed(seed)
    model = models.create(TINY)
    tokenizer = models.tokenizer(TINY)
    mean, std = models.mean_std(model)
    rng = np.random.default_rng(seed)
    names = sorted(COLOURS)
    labels = torch.arange(64) % len(names)
    pixels = torch.stack([images.decode(drawn_image(COLOURS[names[i]], rng), 32, 10**8) for i in labels.tolist()])
    pixels = images.normalize(pixels, mean, std)
    captions = [tokenizer([f"a photo of a {n} colour." for n in names]),
                tokenizer([f"a drawing of the {n} colour" for n in names])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        texts = model.encode_text(captions[step % 2], normalize=True)
        logits = model.logit_scale.exp() * model.encode_image(pixels, normalize=True) @ texts.T
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(model, path, steps)


def drawn_image(colour: tuple[int, int, int], rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
    """A noisy image of one dominant colour with a random grey rectangle, of a random size."""
    w, h = int(rng.integers(36, 64)), int(rng.integers(36, 64))
    noise = rng.integers(-25, 26, (h, w, 3))
    im = Image.fromarray(np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8))
    x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    ImageDraw.Draw(im).rectangle((x, y, x + w // 4, y + h // 4), fill=(128, 128, 128))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def drawing(n: int, colour: tuple[int, int, int]) -> bytes:
    """Sample n's image for conftest's `write_shards(image=...)`: no two samples look alike."""
    return drawn_image(colour, np.random.default_rng(n))


def write_imagefolder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int, seed: int = 0) -> Path:
    """root/<class>/NN.jpg|png: `per_class` drawn images per class (formats alternating)."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            (root / name / f"{i:02d}.{ext}").write_bytes(drawn_image(colour, rng, fmt))
    return root
