"""Perceptual hashes: imagehash's 64-bit pHash of each image, as 8 bytes.

JPEGs are decoded at reduced scale (libjpeg's DCT scaling, `Image.draft`) to no less than
64 px a side, twice what pHash looks at (32x32 greyscale), which is most of the speed.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

HASH_BYTES = 8
DRAFT_SIZE = (64, 64)


def phash(image: bytes) -> bytes | None:
    """The 64-bit pHash of encoded image bytes (8 bytes, imagehash's bit order), or None
    when the image cannot be decoded."""
    import imagehash
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as im:
                im.draft("L", DRAFT_SIZE)
                bits = imagehash.phash(im.convert("L")).hash
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
    return np.packbits(bits.reshape(-1)).tobytes()


def as_array(hashes: list[bytes]) -> np.ndarray:
    """uint8[n, 8] of n hashes (what faiss's binary indexes take)."""
    return np.frombuffer(b"".join(hashes), np.uint8).reshape(len(hashes), HASH_BYTES)


def hashed(column, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, uint8[len(rows), 8]) of the alive rows of a binary(8) hash column that have a hash."""
    import pyarrow as pa

    rows = np.flatnonzero(alive & column.is_valid().to_numpy(zero_copy_only=False))
    codes = column.take(pa.array(rows)).combine_chunks()
    data = np.frombuffer(codes.buffers()[1], np.uint8)[codes.offset * 8:(codes.offset + len(rows)) * 8] \
        if len(rows) else np.zeros(0, np.uint8)
    return rows, data.reshape(len(rows), HASH_BYTES)
