"""The only images `wit view` sends: re-encoded JPEGs of at most a given side, made from a
sample's image member read at its offset (or an evaluation image), its header checked
against the pixel cap before anything decodes it (wit.formats.images.open_checked). The
bytes of the shards are never sent as they are."""

from __future__ import annotations

import io
import os

from PIL import Image

from wit.formats.errors import WitError
from wit.formats.images import ImageRefused, open_checked
from wit.formats.shards import open_regular

THUMBNAIL, LARGE = 256, 1024   # sides in pixels
MAX_MEMBER = 64 << 20          # an image member larger than this is not read


def resized_jpeg(data: bytes, side: int, quality: int = 85) -> bytes:
    """`data` (any format open_checked accepts) as a JPEG of at most side x side pixels;
    ImageRefused when it must not or cannot be decoded."""
    image, fmt = open_checked(data)
    with image:
        try:
            if fmt == "JPEG":
                image.draft("RGB", (side, side))   # decode at a reduced scale: cheap for large JPEGs
            image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageRefused("undecodable_image", f"{fmt} image does not decode ({type(e).__name__})") from None
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()


def read_at(path: str, offset: int, size: int) -> bytes | None:
    """`size` bytes of a regular file at `offset`, or None when the file cannot give them."""
    if size is None or offset is None or not 0 < size <= MAX_MEMBER:
        return None
    try:
        with open_regular(path) as f:
            data = os.pread(f.fileno(), size, offset)
    except (OSError, WitError):
        return None
    return data if len(data) == size else None
