"""Face blurring for `wit filter --blur-faces`, as DataComp blurs the faces of its pool.

The detector is OpenCV's Haar cascades shipped in the opencv-python-headless wheel (no
download, CPU only): the frontal cascade `alt`, and the profile cascade on the image and on
its mirror (it finds faces turned one way only). The settings (CASCADES, MIN_FACE) were
tuned on real faces and no-face photos found offline, which tests/bench/bench_faces.py
scores against OpenCV's tutorial detector: `alt` rather than `default` or `alt2` (as many
faces found, far fewer boxes on textures), no histogram equalisation (with it a third of
the faces under 40 pixels were missed), 3 neighbours, faces from 20 pixels on the
detection copy, which is the image shrunk to DETECT_SIDE on its longer side.

`blur_faces(data)`: the header is checked (format, pixel cap) before anything is
decoded; the image is decoded once, faces are looked for upright (EXIF orientation
applied to the detection copy only), and each box, grown by MARGIN a side, is replaced by
a heavy blur (shrunk to BLUR_CELLS cells across, smoothed, enlarged back): the detector
finds no face in it again. The image is re-encoded once, in its own format and mode (JPEG at
quality 95 with the source's chroma subsampling; PNG, lossless WebP, GIF, BMP and TIFF
lossless, so the pixels outside the boxes are unchanged). No metadata is carried over
but the ICC profile and, where it is not 1, the EXIF orientation (alone in a new EXIF
block, so the image shows as before): no GPS, camera or comment. Of an animated image only
the first frame is written (the frame a loader reads; no other frame keeps a face).
Boxes are [x, y, w, h] of the blurred regions, in the pixels of the image as written.
"""

from __future__ import annotations

import functools
import io
import multiprocessing

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin

from wit.formats.images import MAX_PIXELS, ImageRefused, open_checked

DETECT_SIDE = 1024        # the detection copy's longer side at most (faces from 2% of it)
MIN_FACE = 20             # pixels of the detection copy (the cascades' window)
# (cascade file, scale step, minimum neighbours): the profile cascade is the slower one, and
# twice as many passes; its coarser scale step halves the time and lost no face in the benchmark
CASCADES = (("haarcascade_frontalface_alt.xml", 1.1, 3), ("haarcascade_profileface.xml", 1.2, 3))
MARGIN = 0.2              # of the box's width and height, on each side
BLUR_CELLS = 8            # the blurred box holds no more detail than this many cells across
JPEG_QUALITY = 95
ORIENTATION = 0x0112

Box = list[int]


@functools.cache
def cascades() -> tuple[cv2.CascadeClassifier, ...]:
    """The cascades, loaded once per process (one OpenCV thread in a pool worker, whose
    siblings have the other cores)."""
    if multiprocessing.parent_process() is not None:
        cv2.setNumThreads(1)
    loaded = tuple(cv2.CascadeClassifier(cv2.data.haarcascades + name) for name, _, _ in CASCADES)
    for (name, _, _), cascade in zip(CASCADES, loaded):
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load {cv2.data.haarcascades}{name}: reinstall "
                               "opencv-python-headless")
    return loaded


def detect(gray: np.ndarray) -> list[Box]:
    """Face boxes [x, y, w, h] in a greyscale uint8 image (any size: searched on a copy
    shrunk to DETECT_SIDE, boxes mapped back), overlapping ones merged."""
    h, w = gray.shape
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                 interpolation=cv2.INTER_AREA)
    found = _search(np.ascontiguousarray(small))
    return _merge([[round(v / scale) for v in box] for box in found], w, h)


def _search(gray: np.ndarray) -> list[Box]:
    (frontal, profile), width = cascades(), gray.shape[1]
    (_, frontal_step, frontal_neighbours), (_, profile_step, profile_neighbours) = CASCADES
    size = (MIN_FACE, MIN_FACE)
    boxes = [list(map(int, b)) for b in frontal.detectMultiScale(gray, frontal_step, frontal_neighbours, minSize=size)]
    boxes += [list(map(int, b)) for b in profile.detectMultiScale(gray, profile_step, profile_neighbours, minSize=size)]
    mirrored = np.ascontiguousarray(gray[:, ::-1])   # the profile cascade finds faces turned one way only
    boxes += [[width - int(x) - int(bw), int(y), int(bw), int(bh)]
              for x, y, bw, bh in profile.detectMultiScale(mirrored, profile_step, profile_neighbours, minSize=size)]
    return boxes


def _merge(boxes: list[Box], width: int, height: int) -> list[Box]:
    """Boxes clipped to the image; two that overlap by more than half the smaller one
    become the box around both."""
    boxes = [_clip(b, width, height) for b in boxes]
    boxes = [b for b in boxes if b[2] > 0 and b[3] > 0]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                overlap = (max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
                           * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])))
                if overlap > 0.5 * min(a[2] * a[3], b[2] * b[3]):
                    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                    boxes[i] = [x0, y0, max(a[0] + a[2], b[0] + b[2]) - x0, max(a[1] + a[3], b[1] + b[3]) - y0]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes)


def _clip(box: Box, width: int, height: int) -> Box:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def grow(box: Box, width: int, height: int, margin: float = MARGIN) -> Box:
    """The box grown by `margin` of its size on each side, clipped to the image."""
    dx, dy = round(box[2] * margin), round(box[3] * margin)
    return _clip([box[0] - dx, box[1] - dy, box[2] + 2 * dx, box[3] + 2 * dy], width, height)


def blur_region(pixels: np.ndarray) -> np.ndarray:
    """A region (H x W or H x W x C) with no detail finer than 1/BLUR_CELLS of its longer
    side: shrunk by area averaging, smoothed, enlarged back (cheap at any size)."""
    h, w = pixels.shape[:2]
    step = max(h, w) / BLUR_CELLS
    cells = (max(1, round(w / step)), max(1, round(h / step)))
    work = pixels.astype(np.float32)
    small = cv2.resize(work, cells, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 0.8, borderType=cv2.BORDER_REPLICATE)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(pixels.shape)
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        big = np.clip(np.rint(big), info.min, info.max)
    return big.astype(pixels.dtype)


def blur_faces(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[bytes | None, list[Box]]:
    """The encoded image with its faces blurred, re-encoded once in its own format, and the
    blurred boxes [x, y, w, h] (see the module's doc); (None, []) when no face is found (the
    caller keeps the original bytes). Raises ImageRefused for an image refused by its
    header (`open_checked`, nothing decoded) or that does not decode."""
    image, fmt = open_checked(data, max_pixels)
    with image:
        try:
            image.load()
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken pixel data
            raise ImageRefused("undecodable_image", f"{fmt} pixel data does not decode ({type(e).__name__})") from None
        orientation = _orientation(image)
        work = _workable(image)   # blurred in place: no copy of the whole image
        width, height = work.size
        boxes = _merge([grow(b, width, height) for b in _detect_upright(_gray(work), orientation)], width, height)
        if not boxes:
            return None, []
        for x, y, w, h in boxes:
            region = blur_region(np.asarray(work.crop((x, y, x + w, y + h))))
            work.paste(Image.frombytes(work.mode, (w, h), region.tobytes()), (x, y))
        return _encode(work, image, fmt, data, orientation, boxes), boxes


# ---- decoding and encoding -------------------------------------------------------------
def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers do
        return 1
    return value if 1 <= value <= 8 else 1


def _workable(image: Image.Image) -> Image.Image:
    """The image in a mode whose pixels can be blurred channel by channel: its own mode
    where that is one, else RGB or RGBA (palette and 1-bit images)."""
    if image.mode in ("L", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"):
        return image
    if image.mode.startswith("I;16"):   # 16-bit grey of another byte order: its values, not clipped to 8 bits
        return image.convert("I")
    if image.mode == "1":
        return image.convert("L")
    alpha = image.mode in ("PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if alpha else "RGB")


def _gray(work: Image.Image) -> np.ndarray:
    """The detection image: 8-bit grey (a deeper image scaled by its brightest pixel)."""
    if work.mode in ("I;16", "I", "F"):
        values = np.asarray(work, dtype=np.float32)
        top = float(values.max()) or 1.0
        return np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return np.asarray(work.convert("L") if work.mode != "L" else work)


# the transposition that shows the stored image upright, for each EXIF orientation (numpy)
_UPRIGHT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.T, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, 1),
}


def _detect_upright(gray: np.ndarray, orientation: int) -> list[Box]:
    """Faces looked for in the image as it is shown (its EXIF orientation applied), boxes
    in the stored image's pixels."""
    turn = _UPRIGHT.get(orientation)
    if turn is None:
        return detect(gray)
    h, w = gray.shape
    boxes = detect(np.ascontiguousarray(turn(gray)))
    # where each shown pixel is stored: the same transposition applied to the coordinates
    xs, ys = turn(np.broadcast_to(np.arange(w), (h, w))), turn(np.broadcast_to(np.arange(h)[:, None], (h, w)))
    stored = []
    for x, y, bw, bh in boxes:
        sx, sy = xs[y:y + bh, x:x + bw], ys[y:y + bh, x:x + bw]
        stored.append([int(sx.min()), int(sy.min()), int(sx.max() - sx.min() + 1), int(sy.max() - sy.min() + 1)])
    return stored


def _encode(blurred: Image.Image, source: Image.Image, fmt: str, data: bytes, orientation: int,
            boxes: list[Box]) -> bytes:
    """`blurred` encoded once as `fmt`, in the source's mode (a palette image in its own
    palette), with only the ICC profile and the orientation of the source's metadata."""
    if source.mode == "P" and fmt in ("PNG", "GIF") and not isinstance(source.info.get("transparency"), bytes):
        blurred = _repalette(blurred, source, boxes)
    keep: dict = {}
    if source.info.get("icc_profile"):
        keep["icc_profile"] = source.info["icc_profile"]
    if orientation != 1 and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        keep["exif"] = exif.tobytes()
    out = io.BytesIO()
    if fmt == "JPEG":
        sampling = JpegImagePlugin.get_sampling(source)   # -1: not 3-channel YCbCr (Pillow's default then)
        blurred.save(out, "JPEG", quality=JPEG_QUALITY, progressive=bool(source.info.get("progressive")),
                     **({"subsampling": sampling} if sampling != -1 else {}), **keep)
    elif fmt == "PNG":
        if "transparency" in source.info and blurred.mode == source.mode:
            keep["transparency"] = source.info["transparency"]
        blurred.save(out, "PNG", **keep)
    elif fmt == "WEBP":
        lossless = _webp_lossless(data)
        options = {"exact": True} if lossless else {"quality": JPEG_QUALITY}   # lossless: Pillow's default effort
        blurred.save(out, "WEBP", lossless=lossless, **options, **keep)
    elif fmt == "GIF":
        blurred.save(out, "GIF", **({"transparency": blurred.info["transparency"]}
                                    if "transparency" in blurred.info else {}))
    elif fmt == "TIFF":
        blurred.save(out, "TIFF", compression="tiff_lzw", **keep)
    else:  # BMP
        (blurred.convert("RGB") if blurred.mode not in ("1", "L", "P", "RGB", "RGBA") else blurred).save(out, fmt)
    return out.getvalue()


def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP holds a lossless (VP8L) bitstream: its first image chunk says."""
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
        if chunk in (b"VP8 ", b"VP8L"):
            return chunk == b"VP8L"
        if chunk == b"ANMF":   # an animation frame: its own image chunk follows its 16-byte header
            offset += 8 + 16
            continue
        offset += 8 + size + (size & 1)
    return False


def _repalette(blurred: Image.Image, source: Image.Image, boxes: list[Box]) -> Image.Image:
    """A palette image back in the source's palette: its own indices outside the boxes, the
    nearest colour (no dithering) inside them, transparent where the blur left alpha < 128."""
    indices = np.array(source)
    transparency = source.info.get("transparency")
    for x, y, w, h in boxes:
        region = blurred.crop((x, y, x + w, y + h))
        indices[y:y + h, x:x + w] = np.asarray(region.convert("RGB").quantize(palette=source,
                                                                              dither=Image.Dither.NONE))
        if isinstance(transparency, int) and region.mode == "RGBA":
            indices[y:y + h, x:x + w][np.asarray(region.getchannel("A")) < 128] = transparency
    out = Image.frombytes("P", source.size, indices.tobytes())
    out.putpalette(source.getpalette())
    if isinstance(transparency, int):
        out.info["transparency"] = transparency
    return out
