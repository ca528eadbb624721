"""Fixtures of the trainer tests: small WebDataset shards written here, with uneven
sizes and chosen defects, and a tiny OpenCLIP model config."""

from __future__ import annotations

import io
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

TINY_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shards(out: Path, sizes: list[int], broken: set[str] = frozenset(), no_text: set[str] = frozenset(),
                 start: int = 0, image=None, captions: int = 0, text=None) -> list[str]:
    """Shards NNNNNN.tar holding sizes[i] samples each (keys numbered globally from `start`),
    with sizes.json; samples whose key is in `broken` get undecodable image bytes, those in
    `no_text` no caption. `image(n, colour)` makes the JPEG bytes of sample n (default: a
    plain 40x48 picture of the colour). With `captions`, each json has a 32-digit uid and
    that many `texts` ("CAPTION, caption j"), as an image-centric crawl writes. `text(n)`, where
    given and not None, replaces sample n's caption. Returns all keys in order."""
    out.mkdir(parents=True, exist_ok=True)
    keys, n = [], start
    names = list(COLOURS)
    for i, size in enumerate(sizes):
        with tarfile.open(out / f"{i:06d}.tar", "w") as tar:
            for _ in range(size):
                key = f"{n:09d}"
                colour = names[n % len(names)]
                blob = image(n, COLOURS[colour]) if image else jpeg(COLOURS[colour])
                _add(tar, f"{key}.jpg", b"not a jpeg" if key in broken else blob)
                caption = (text and text(n)) or f"a {colour} picture number {n}"
                if key not in no_text:
                    _add(tar, f"{key}.txt", caption.encode())
                meta = {"uid": key, "url": f"http://demo.invalid/{key}.jpg"}
                if captions:
                    meta = {"uid": hashlib.md5(key.encode()).hexdigest(), "url": meta["url"],
                            "texts": [{"text": f"{caption}, caption {j}", "query_ids": []} for j in range(captions)]}
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                keys.append(key)
                n += 1
    (out / "sizes.json").write_text(json.dumps({f"{i:06d}.tar": s for i, s in enumerate(sizes)}))
    return keys


@pytest.fixture
def tiny_model() -> dict:
    return {"name": "wit-test-tiny", "config": TINY_MODEL}


@pytest.fixture(autouse=True)
def _quiet_albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
