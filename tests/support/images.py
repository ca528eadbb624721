"""Pictures for the tests' samples: plain-colour and noise JPEGs, drawn images of one
dominant colour and ImageFolders of them, photo-like JPEGs (the near-duplicate tests)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def encode(im: Image.Image, quality: int = 90) -> bytes:
    """The JPEG bytes of an image."""
    buffer = io.BytesIO()
    im.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 48), quality: int = 90) -> bytes:
    """A plain picture of one colour."""
    return encode(Image.new("RGB", size, colour), quality)


def noise_jpeg(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """Random pixels from `seed` (default JPEG quality): no two seeds give alike images."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


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
    """Sample n's image for `write_shards(image=...)` (tests.support.shards): no two samples
    look alike."""
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


def photo(seed: int, size: tuple[int, int] = (256, 192)) -> bytes:
    """A photo-like JPEG: a two-colour gradient, 4-11 random shapes, blur, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    im = Image.fromarray(((a * (1 - t) + b * t) * np.ones((h, w, 3))).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(4, 12)):
        x, y = rng.integers(-w // 4, w), rng.integers(-h // 4, h)
        box = (x, y, x + rng.integers(w // 10, w // 2), y + rng.integers(h // 10, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)], fill=fill)
    noisy = np.asarray(im.filter(ImageFilter.GaussianBlur(1))).astype(np.int16) + rng.integers(-10, 10, (h, w, 3))
    return encode(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
