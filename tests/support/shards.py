"""Small WebDataset shards written by the tests, with uneven sizes and chosen defects: what
the trainer reads, and with a manifest.json, a SHARDS dir as `wit shard` writes it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.support.images import COLOURS, jpeg


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


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


def shards_dir(out, sizes, **kwargs):
    """`write_shards`' shards with the manifest.json of a SHARDS dir."""
    write_shards(out, sizes, **kwargs)
    tars = sorted(out.glob("*.tar"))
    (out / "manifest.json").write_text(json.dumps({"shards": [
        {"name": t.name, "samples": n, "bytes": t.stat().st_size, "sha256": hashlib.sha256(t.read_bytes()).hexdigest()}
        for t, n in zip(tars, sizes)]}))
    return out


def write_raw_tar(path: Path, members: list[tuple[str, bytes]], device: bool = False) -> None:
    """A tar of `members` (name, bytes) as given, names unchecked (path tricks included),
    then a symbolic link `link.jpg` to /etc/passwd and, with `device`, a character device
    `dev.jpg`: what a hostile shard holds."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            _add(tar, name, data)
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        if device:
            dev = tarfile.TarInfo("dev.jpg")
            dev.type = tarfile.CHRTYPE
            tar.addfile(dev)

