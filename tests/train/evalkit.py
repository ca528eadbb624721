"""Inputs of the evaluation and search tests: a tiny trained-model checkpoint, ImageFolders of
drawn images, and running `python -m train.<command>` as a user would."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tests.train.conftest import COLOURS, TINY_MODEL
from train import images, model as models
from train.config import ModelConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = ModelConfig("wit-test-tiny", TINY_MODEL)


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint of the tiny model, randomly initialised from `seed`: all `train.model.load` needs."""
    torch.manual_seed(seed)
    model = models.create(TINY)
    torch.save({"state_dict": model.state_dict(), "config": TrainConfig(shards="x", run_dir="y", model=TINY).to_dict(),
                "step": 0}, path)
    return path


def write_trained_checkpoint(path: Path, steps: int = 10, seed: int = 0) -> Path:
    """A checkpoint of the tiny model fitted for a few steps to tell the colours of drawn
    images apart by captions `a photo of a <colour> colour.` / `a drawing of the <colour> colour`."""
    torch.manual_seed(seed)
    model = models.create(TINY)
    tokenizer = models.tokenizer(TINY)
    mean, std = models.mean_std(model)
    rng = np.random.default_rng(seed)
    names = sorted(COLOURS)
    labels = torch.arange(64) % len(names)
    pixels = torch.stack([images.decode(drawn_image(COLOURS[names[i]], rng), 32, 10**8) for i in labels.tolist()])
    pixels = images.normalize(pixels, mean, std)
    captions = tokenizer([f"a photo of a {n} colour." for n in names] + [f"a drawing of the {n} colour" for n in names])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        texts = model.encode_text(captions[step % 2 * len(names):][:len(names)], normalize=True)
        logits = model.logit_scale.exp() * model.encode_image(pixels, normalize=True) @ texts.T
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"state_dict": model.state_dict(), "config": TrainConfig(shards="x", run_dir="y", model=TINY).to_dict(),
                "step": steps}, path)
    return path


def drawn_image(colour: tuple[int, int, int], rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
    """A noisy image of one dominant colour with a random grey rectangle, of a random size."""
    w, h = int(rng.integers(36, 64)), int(rng.integers(36, 64))
    noise = rng.integers(-25, 26, (h, w, 3))
    pixels = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(pixels)
    x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    ImageDraw.Draw(im).rectangle((x, y, x + w // 4, y + h // 4), fill=(128, 128, 128))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def write_imagefolder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int, seed: int = 0) -> Path:
    """root/<class>/NN.jpg|png: `per_class` drawn images per class (formats alternating)."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            (root / name / f"{i:02d}.{ext}").write_bytes(drawn_image(colour, rng, fmt))
    return root


def write_drawn_shards(out: Path, sizes: list[int], broken: set[str] = frozenset(),
                       no_text: set[str] = frozenset(), seed: int = 0) -> dict[str, bytes]:
    """Like conftest's `write_shards`, but every image is a different drawing (no two samples
    have equal features). Returns {key: image bytes} of every sample, in order."""
    rng = np.random.default_rng(seed)
    names, written, n = list(COLOURS), {}, 0
    out.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        with tarfile.open(out / f"{i:06d}.tar", "w") as tar:
            for _ in range(size):
                key, colour = f"{n:09d}", names[n % len(names)]
                written[key] = b"not an image" if key in broken else drawn_image(COLOURS[colour], rng)
                members = {"jpg": written[key], "json": json.dumps({"url": f"http://demo.invalid/{key}.jpg"}).encode()}
                if key not in no_text:
                    members["txt"] = f"a {colour} drawing, number {n}".encode()
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    (out / "sizes.json").write_text(json.dumps({f"{i:06d}.tar": s for i, s in enumerate(sizes)}))
    return written


def run_module(module: str, *args) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, prog: str, *fragments) -> None:
    """Exit status 1 and exactly one `PROG: error: ...` line on stderr holding every fragment."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
