"""Drawing the demo world's shapes: each shape as a polygon (or an ellipse) at any size and
rotation, supersampled for smooth edges, and the JPEG bytes of an image."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from wit.formats.errors import WitError

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond")
JPEG_QUALITY = 90
SUPERSAMPLE = 2  # drawn this many times larger, then box-filtered down: smooth edges


def jpeg(image: Image.Image) -> bytes:
    """JPEG bytes of an image (no chroma subsampling: thin coloured strokes stay coloured)."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


def draw_object(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, rotation: float,
                fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((x - r, y - r, x + r, y + r), outline=fill, width=max(1, round(0.4 * r)))
    else:
        draw.polygon(_polygon(shape, x, y, r, rotation), fill=fill)


def _polygon(shape: str, x: float, y: float, r: float, rotation: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = _regular(4, 1.2, 45)
    elif shape == "diamond":
        points = [(0.0, -1.3), (0.95, 0.0), (0.0, 1.3), (-0.95, 0.0)]  # taller than wide
    elif shape == "triangle":
        points = _regular(3, 1.3, -90)  # pointing up
    elif shape == "star":
        outer, inner = _regular(5, 1.35, -90), _regular(5, 0.55, -54)
        points = [p for pair in zip(outer, inner) for p in pair]
    elif shape == "cross":
        w, arm = 0.36, 1.15
        points = [(w, -arm), (w, -w), (arm, -w), (arm, w), (w, w), (w, arm),
                  (-w, arm), (-w, w), (-arm, w), (-arm, -w), (-w, -w), (-w, -arm)]
    else:
        raise WitError(f"unknown shape {shape!r} (choose from: {', '.join(SHAPES)})")
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(x + r * (px * cos - py * sin), y + r * (px * sin + py * cos)) for px, py in points]


def _regular(n: int, radius: float, start: float) -> list[tuple[float, float]]:
    angles = [math.radians(start + 360 * i / n) for i in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


# How far each shape reaches from its centre, in units of its radius, at any rotation.
EXTENT = {shape: max(math.hypot(px, py) for px, py in _polygon(shape, 0, 0, 1, 0))
           if shape not in ("circle", "ring") else 1.0 for shape in SHAPES}
