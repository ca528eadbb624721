"""The image header check: an image's size is read from its header, before anything
decodes it, and checked against the pixel cap.

Only formats whose size is in a header that Pillow reads without decoding, and that every
decoder here (Pillow, OpenCV in img2dataset, torchvision) recognises by the same magic
bytes, are accepted: JPEG, PNG, WebP, GIF, BMP and TIFF. Anything else (Radiance HDR,
OpenEXR, PNM, JPEG 2000, ...) is refused as `unsupported_format` rather than decoded.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit
MAX_IMAGE_BYTES = 32 << 20   # the largest encoded image a download may bring
REASONS = ("unsupported_format", "undecodable_image", "too_many_pixels")
_MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}


class ImageRefused(ValueError):
    """An image that must not be decoded; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _format_of(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for fmt, magics in _MAGIC.items() if data.startswith(magics)), None)


def open_checked(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str]:
    """The image opened from its header only (nothing decoded yet), and its format; raises
    ImageRefused for an unsupported format, a header that cannot be read, or more than
    `max_pixels` pixels. The caller closes it."""
    expected = _format_of(data)
    if expected is None:
        raise ImageRefused("unsupported_format", "not a JPEG, PNG, WebP, GIF, BMP or TIFF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[expected])
    except Image.DecompressionBombError as e:
        raise ImageRefused("too_many_pixels", str(e)) from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a broken header
        raise ImageRefused("undecodable_image", f"unreadable {expected} header ({type(e).__name__})") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        image.close()
        if width < 1 or height < 1:
            raise ImageRefused("undecodable_image", f"{expected} header declares {width}x{height} pixels")
        raise ImageRefused("too_many_pixels", f"{width}x{height} pixels, over the {max_pixels:,}-pixel cap")
    return image, expected


def header_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(width, height, format) of an encoded image, read from its header only (see
    `open_checked`)."""
    image, fmt = open_checked(data, max_pixels)
    with image:
        return *image.size, fmt
