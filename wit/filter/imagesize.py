"""The image's size as found on the web (DataComp's basic filtering: the shorter side over
200 pixels, an aspect ratio under 3), read from the sample json or the image header
(samples.py), never decoded."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from wit.filter.removal import Removed


class ImageSize:
    """Removes, in this order: images whose size cannot be read (`unknown_size`), whose
    shorter side is under `min_side` pixels (`min_side`, the value: that side), and whose
    longer side over the shorter is above `max_aspect` (`aspect_ratio`, the value: that ratio)."""
    name = "image_size"

    @classmethod
    def from_config(cls, config, inputs) -> "ImageSize | None":
        if not (config.min_image_side or config.max_aspect_ratio):
            return None
        return cls(config.min_image_side, config.max_aspect_ratio)

    def __init__(self, min_side: int, max_aspect: float) -> None:
        self.min_side, self.max_aspect = min_side, max_aspect

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        width = samples["width"].to_numpy(zero_copy_only=False).astype(np.float64)   # nulls: NaN
        height = samples["height"].to_numpy(zero_copy_only=False).astype(np.float64)
        short, long = np.fmin(width, height), np.fmax(width, height)
        aspect = long / short
        for row in np.flatnonzero(alive):
            if np.isnan(short[row]):
                yield Removed(int(row), "unknown_size")
            elif self.min_side and short[row] < self.min_side:
                yield Removed(int(row), "min_side", value=float(short[row]))
            elif self.max_aspect and aspect[row] > self.max_aspect:
                yield Removed(int(row), "aspect_ratio", value=float(aspect[row]))
