"""Image decoding and the paper's preprocessing, on uint8 tensors.

Training: resize the shorter side to the model's size, then a random square crop (the
paper's only augmentation). Evaluation: the same resize, then the centre crop. Decoding
is torchvision's (libjpeg-turbo, libpng, libwebp), or PIL's reduced-scale JPEG decoding
for images at least twice the target size; resizing is torch's antialiased bicubic on
uint8. Workers hand over uint8 batches (a quarter of float32's bytes); `normalize` runs
on the device. Before anything decodes an image, `wit.formats.images.open_checked` checks
its format and its size against the pixel cap; an unusable image raises its ImageRefused."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from wit.formats.images import ImageRefused, open_checked


def decode(data: bytes, size: int, max_pixels: int, crop: tuple[float, float] | None = None) -> torch.Tensor:
    """Decode `data` into a [3, size, size] uint8 tensor: the shorter side resized to `size`
    (bicubic, antialiased), then a square crop at fractional offsets `crop` (each in [0, 1);
    None = the centre). The header is checked first (ImageRefused); the crop is cut from
    the source and only that square is resized."""
    im, fmt = open_checked(data, max_pixels)
    try:
        with im:
            w, h = im.size
            if fmt == "JPEG" and min(w, h) >= 2 * size:
                im.draft("RGB", _draft_size(w, h, size))   # decode at 1/2, 1/4 or 1/8 scale
                pixels = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
            else:
                pixels = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    except Exception as e:  # PIL and torchvision raise many types for bad data
        raise ImageRefused("undecodable_image", f"undecodable {fmt} image ({type(e).__name__})") from None
    h, w = pixels.shape[1:]
    side = min(w, h)                      # the source square that becomes size x size
    fx, fy = crop if crop is not None else (0.5, 0.5)
    left, top = round(fx * (w - side)), round(fy * (h - side))
    square = pixels[:, top:top + side, left:left + side]
    if side == size:
        return square.contiguous()
    return F.interpolate(square[None], size=(size, size), mode="bicubic", antialias=True)[0]


def _draft_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The smallest (w, h) that still keeps the shorter side >= size after decoding."""
    scale = size / min(w, h)
    return max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)


def normalize(images: torch.Tensor, mean: tuple, std: tuple, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised floats, on whatever device `images` is on."""
    m = torch.tensor(mean, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return images.to(dtype).sub_(m).div_(s)
