"""The tests' tiny OpenCLIP model: its config, training configurations of it, and
checkpoints of it (random, or fitted to tell colours apart)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.support.images import COLOURS, drawn_image
from train.data import preprocess as images
from train.model import clip as models
from train.config import ModelConfig, TrainConfig

TINY_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY = ModelConfig("wit-test-tiny", TINY_MODEL)


def train_config(tiny_model: dict, **kw) -> TrainConfig:
    """A TrainConfig of the model of the `tiny_model` fixture (tests/train/conftest.py)."""
    return TrainConfig(shards="s", run_dir="r", model=ModelConfig(tiny_model["name"], tiny_model["config"]), **kw)


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
