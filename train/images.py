"""Image decoding and the paper's preprocessing, on uint8 tensors.

Training: resize the shorter side to the model's size, then a random square crop (the
paper's only augmentation). Evaluation: the same resize, then the centre crop. Workers
hand over uint8 batches (a quarter of float32's bytes); `normalize` runs on the device."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image

warnings.simplefilter("error", Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be used: undecodable, or over the pixel cap."""


def decode(data: bytes, size: int, max_pixels: int, crop: tuple[float, float] | None = None) -> torch.Tensor:
    """Decode `data` into a [3, size, size] uint8 tensor: shorter side resized to `size`,
    then a square crop at fractional offsets `crop` (each in [0, 1); None = centre).
    The pixel count is checked from the header, before any pixel is decoded."""
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > max_pixels:
            raise ImageError(f"{w}x{h} image is over the {max_pixels:,}-pixel cap")
        im.draft("RGB", _draft_size(w, h, size))   # JPEG: decode at a reduced scale when much larger
        im = im.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"undecodable image ({type(e).__name__})") from None
    w, h = im.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((rw, rh), Image.BICUBIC)
    fx, fy = crop if crop is not None else (0.5, 0.5)
    left = min(int(fx * (rw - size + 1)), rw - size) if crop is not None else (rw - size) // 2
    top = min(int(fy * (rh - size + 1)), rh - size) if crop is not None else (rh - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size)))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _draft_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The smallest (w, h) that still keeps the shorter side >= size after decoding."""
    scale = size / min(w, h)
    return max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)


def normalize(images: torch.Tensor, mean: tuple, std: tuple, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised floats, on whatever device `images` is on."""
    m = torch.tensor(mean, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - m) / s
