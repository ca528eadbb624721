"""Face blurring (`wit filter --blur-faces`, wit/filter/faces.py) on real photos found
offline in installed packages: Grace Hopper's portrait (matplotlib's sample data) has a
face; scikit-learn's china.jpg and flower.jpg have none. The real detector runs on them."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from sklearn.datasets import load_sample_images

from tests.support.crawls import Sample, write_download
from tests.support.witcli import run_wit
from wit.filter import faces
from wit.filter.faces import blur_faces
from wit.formats.images import ImageRefused
from wit.formats.shards import read_manifest
from wit.formats.tars import read_member, scan_tar
from wit.shards.build import ShardConfig, run as shard

HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"   # 512 x 600
FACE = (165, 115, 200, 200)    # [x, y, w, h] of her face (eyes to chin), by eye
GPS = 0x8825


def exif_with_gps(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = orientation
    exif.get_ifd(GPS).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return exif.tobytes()


def encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode)).astype(np.int16)


def mask(boxes: list[list[int]], shape: tuple[int, ...]) -> np.ndarray:
    inside = np.zeros(shape[:2], bool)
    for x, y, w, h in boxes:
        inside[y:y + h, x:x + w] = True
    return inside


def overlap(box, other) -> float:
    """The share of `other` that `box` covers."""
    w = max(0, min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0]))
    h = max(0, min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1]))
    return w * h / (other[2] * other[3])


def detail(pixels: np.ndarray) -> float:
    """High-frequency energy: the variance of the 4-neighbour Laplacian."""
    p = pixels.astype(np.float64)
    return float((4 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]).var())


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    return Image.open(HOPPER).convert("RGB")


@pytest.fixture(scope="module")
def hopper_jpeg(hopper) -> bytes:
    """The portrait as a camera writes it: JPEG with EXIF (maker, GPS position)."""
    return encoded(hopper, "JPEG", quality=92, exif=exif_with_gps())


def test_a_face_in_a_jpeg_is_blurred_the_rest_kept_and_the_metadata_dropped(hopper_jpeg):
    out, boxes = blur_faces(hopper_jpeg)
    assert out is not None and boxes
    assert max(overlap(b, FACE) for b in boxes) > 0.9   # the whole face is in a blurred box
    assert all(b[2] * b[3] < 0.5 * 512 * 600 for b in boxes)   # not the whole picture
    before, after = decoded(hopper_jpeg), decoded(out)
    assert after.shape == before.shape
    inside = mask(boxes, before.shape)
    assert np.abs(after - before)[inside].mean() > 20
    # only re-encoding error outside the boxes (quality 95)
    assert np.abs(after - before)[~inside].mean() < 1.5
    x, y, w, h = FACE
    assert detail(after[y:y + h, x:x + w].mean(axis=2)) < 0.02 * detail(before[y:y + h, x:x + w].mean(axis=2))
    # nothing the detector could still call a face
    assert blur_faces(out) == (None, [])
    image = Image.open(io.BytesIO(out))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert not image.getexif() and b"Exif" not in out and b"Camera maker" not in out


@pytest.mark.parametrize("fmt, mode, options", [
    ("PNG", "RGB", {"exif": exif_with_gps()}), ("PNG", "RGBA", {"exif": exif_with_gps()}), ("PNG", "L", {}),
    ("PNG", "P", {}), ("GIF", "P", {}), ("WEBP", "RGB", {"lossless": True, "exif": exif_with_gps()}),
])
def test_lossless_formats_keep_every_pixel_outside_the_boxes(hopper, fmt, mode, options):
    im = hopper.quantize(64) if mode == "P" else hopper.convert(mode)
    if mode == "RGBA":   # a real alpha channel: a vertical ramp
        im.putalpha(Image.linear_gradient("L").resize(im.size))
    data = encoded(im, fmt, **options)
    out, boxes = blur_faces(data)
    assert out is not None and max(overlap(b, FACE) for b in boxes) > 0.9
    image = Image.open(io.BytesIO(out))
    assert (image.format, image.mode, image.size) == (fmt, mode, im.size)
    assert not image.getexif()
    colours = "RGB" if mode == "P" else mode   # a palette image in its own palette: colours compared
    before, after = decoded(data, colours), decoded(out, colours)
    inside = mask(boxes, before.shape)
    assert np.array_equal(after[~inside], before[~inside])
    assert np.abs(after - before)[inside].mean() > 15


def test_a_lossy_webp_stays_a_lossy_webp(hopper):
    data = encoded(hopper, "WEBP", quality=90)
    out, boxes = blur_faces(data)
    assert out is not None and max(overlap(b, FACE) for b in boxes) > 0.9
    assert out[:4] == b"RIFF" and out[8:12] == b"WEBP" and not faces._webp_lossless(out)
    before, after = decoded(data), decoded(out)
    inside = mask(boxes, before.shape)
    assert np.abs(after - before)[~inside].mean() < 2.5 < 20 < np.abs(after - before)[inside].mean()


@pytest.mark.parametrize("index", [0, 1])
def test_photos_without_a_face_are_left_alone(index):
    photo = load_sample_images().images[index]   # china.jpg, flower.jpg
    assert blur_faces(encoded(Image.fromarray(photo), "JPEG", quality=90)) == (None, [])


def test_a_rotated_photo_is_searched_upright_and_keeps_only_its_orientation(hopper):
    """Stored on its side with EXIF orientation 6 (as a phone writes it): the face is found
    upright, the boxes are in the stored pixels, the output shows upright as before, and of
    its EXIF only the orientation is left."""
    stored = hopper.transpose(Image.Transpose.ROTATE_90)
    data = encoded(stored, "JPEG", quality=92, exif=exif_with_gps(orientation=6))
    assert blur_faces(encoded(stored, "JPEG", quality=92)) == (None, [])   # on its side: no face
    out, boxes = blur_faces(data)
    assert out is not None
    image = Image.open(io.BytesIO(out))
    assert image.size == stored.size and dict(image.getexif()) == {0x0112: 6}
    assert all(x + w <= stored.width and y + h <= stored.height for x, y, w, h in boxes)
    shown_before = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))).astype(np.int16)
    shown_after = np.asarray(ImageOps.exif_transpose(image)).astype(np.int16)
    x, y, w, h = FACE
    assert np.abs(shown_after - shown_before)[y:y + h, x:x + w].mean() > 20
    before, after = decoded(data), decoded(out)
    assert np.abs(after - before)[~mask(boxes, before.shape)].mean() < 1.5


@pytest.mark.parametrize("orientation", range(2, 9))
def test_the_upright_turns_are_the_ones_viewers_apply(orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    shown = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(faces._UPRIGHT[orientation](stored), shown)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_an_image_over_the_pixel_cap_is_refused_before_decoding(hopper_jpeg, monkeypatch):
    def no_decoding(self):
        raise AssertionError("decoded an image over the pixel cap")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageRefused) as refused:
        blur_faces(png_header(30_000, 30_000))
    assert refused.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as refused:
        blur_faces(hopper_jpeg, max_pixels=512 * 600 - 1)
    assert refused.value.reason == "too_many_pixels"


def test_broken_images_are_refused(hopper_jpeg):
    with pytest.raises(ImageRefused) as refused:
        blur_faces(hopper_jpeg[:len(hopper_jpeg) // 2])
    assert refused.value.reason == "undecodable_image"
    with pytest.raises(ImageRefused) as refused:
        blur_faces(b"<html>not an image</html>")
    assert refused.value.reason == "unsupported_format"


@pytest.mark.slow
def test_wit_filter_blur_faces_rewrites_only_the_face_photo(hopper_jpeg, tmp_path):
    china = encoded(Image.fromarray(load_sample_images().images[0]), "JPEG", quality=90)
    samples = [Sample("http://faces.example/hopper.jpg", "Rear admiral Grace Hopper in uniform", [0], hopper_jpeg,
                      (512, 600)),
               Sample("http://faces.example/china.jpg", "A temple in China", [0], china, (640, 427))]
    crawl = write_download(tmp_path / "crawl", [samples], queries=1)
    shard(ShardConfig(crawl=str(crawl), out=str(tmp_path / "shards"), samples_per_shard=10, workers=1, cap=1000))
    out = tmp_path / "out"
    result = run_wit("filter", "--shards", str(tmp_path / "shards"), "--out", str(out), "--blur-faces",
                     "--workers", "2")
    assert result.returncode == 0, result.stderr

    found = {}
    for entry in read_manifest(str(out))["shards"]:
        with open(out / entry["name"], "rb") as f:
            for _, members in scan_tar(str(out / entry["name"])).samples:
                meta = json.loads(read_member(f, members["json"]))
                found[meta["url"]] = meta, read_member(f, members["jpg"])
    face_meta, face_image = found["http://faces.example/hopper.jpg"]
    china_meta, china_image = found["http://faces.example/china.jpg"]
    assert china_image == china and china_meta["faces"] == []
    assert face_meta["faces"] and max(overlap(b, FACE) for b in face_meta["faces"]) > 0.9
    assert face_meta["sha256"] == hashlib.sha256(face_image).hexdigest() != hashlib.sha256(hopper_jpeg).hexdigest()
    before, after = decoded(hopper_jpeg), decoded(face_image)
    assert np.abs(after - before)[mask(face_meta["faces"], before.shape)].mean() > 20
    assert not Image.open(io.BytesIO(face_image)).getexif()
    # the original face is written nowhere
    for path in out.rglob("*"):
        if path.is_file():
            assert hopper_jpeg not in path.read_bytes(), path
    counts = read_manifest(str(out))["counts"]
    assert counts["faces"] == {"images_blurred": 1, "faces": len(face_meta["faces"])}


def test_a_16_bit_big_endian_tiff_is_searched_at_its_depth(hopper):
    """Big-endian 16-bit grey (TIFF `I;16B`): searched with its own values, not clipped to
    white by a conversion to 8-bit RGB (which found no face, and wrote it unblurred)."""
    grey = np.asarray(hopper.convert("L")).astype(np.uint16) * 257
    data = encoded(Image.frombytes("I;16B", hopper.size, grey.astype(">u2").tobytes()), "TIFF")
    out, boxes = blur_faces(data)
    assert out is not None and max(overlap(b, FACE) for b in boxes) > 0.9
    before = np.asarray(Image.open(io.BytesIO(data)).convert("I"), np.int64)
    after = np.asarray(Image.open(io.BytesIO(out)).convert("I"), np.int64)
    inside = mask(boxes, before.shape)
    assert np.array_equal(after[~inside], before[~inside]) and np.abs(after - before)[inside].mean() > 15 * 257
