"""The trainer reads tars through `wit.formats.tars`: on hostile tars its samples (keys and
bytes) and refused counts are exactly those of `scan_tar` + `read_member`, whether the
tar is a local file or a `pipe:` stream, from the start or after skipping samples."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from tests.support.images import jpeg
from train.data.stream import read_samples
from wit.formats import tars

PNG = b"\x89PNG\r\n\x1a\n fake png bytes"


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_hostile_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("0001.jpg", jpeg((1, 1, 1))), ("0001.txt", b"first"), ("0001.json", b'{"url": "u1"}'),
            ("0002.png", PNG), ("0002.jpg", jpeg((2, 2, 2))), ("0002.txt", b"both png and jpg"),
            ("a/K.jpg", jpeg((3, 3, 3))), ("a/K.txt", b"in a"), ("b/K.jpg", jpeg((4, 4, 4))), ("b/K.txt", b"in b"),
            ("../evil.jpg", jpeg((5, 5, 5))), ("/abs.txt", b"absolute"), ("x/../y.jpg", jpeg((6, 6, 6))),
            ("0003.jpg", jpeg((7, 7, 7))), ("0003.txt", b"dup member"), ("0003.jpg", jpeg((8, 8, 8))),
            ("0004.JPG", jpeg((9, 9, 9))), ("0004.txt", "caf\u00e9 \xff".encode("latin-1")),
            ("0001.jpg", jpeg((10, 10, 10))), ("0001.txt", b"the same key again, later"),
            ("README", b"no extension"), ("0005.txt", b"no image"),
        ]:
            _member(tar, name, data)
        _member(tar, "link.jpg", kind=tarfile.SYMTYPE)
        _member(tar, "dev.jpg", kind=tarfile.CHRTYPE)
    return path


def scanned(path: Path) -> tuple[list[tuple], int]:
    """(key, image, text, meta) of each sample as scan_tar + read_member give them, and the
    number of members and samples it refused or dropped."""
    scan = tars.scan_tar(str(path))
    assert scan.error is None
    out = []
    with open(path, "rb") as f:
        for key, members in scan.samples:
            part = lambda ext: tars.read_member(f, members[ext]) if ext in members else None  # noqa: E731
            text = part("txt")
            out.append((key, part(tars.image_extension(members)), None if text is None else
                        text.decode("utf-8", "replace"), part("json")))
    return out, sum(scan.refused.values())


@pytest.mark.parametrize("pipe", [False, True])
def test_the_reader_gives_the_samples_of_scan_tar_on_hostile_tars(tmp_path, pipe):
    path = write_hostile_tar(tmp_path / "000000.tar")
    expected, refused = scanned(path)
    assert [s[0] for s in expected] == ["0001", "0002", "a/K", "b/K", "0004", "0005"]
    assert expected[1][1] == jpeg((2, 2, 2))                   # the .jpg wins over the .png
    assert expected[0][2] == "first" and expected[5][1] is None
    url = f"pipe:cat {path}" if pipe else str(path)
    counts: Counter = Counter()
    got = [(s.key, s.image, s.text, s.meta) for s in read_samples(url, counts=counts)]
    assert got == expected
    assert counts == {"refused_members": refused} and refused >= 8
    assert [(s.key, s.image, s.text) for s in read_samples(url, skip=2)] == [e[:3] for e in expected[2:]]


def test_a_damaged_tar_keeps_the_samples_before_the_damage_and_counts_it(tmp_path):
    path = write_hostile_tar(tmp_path / "000000.tar")
    whole, _ = scanned(path)
    blob = path.read_bytes()
    cut = blob.index(b"0004.JPG")   # inside the header of sample 0004's image
    path.write_bytes(blob[:cut + 600])
    counts: Counter = Counter()
    got = [(s.key, s.image, s.text, s.meta) for s in read_samples(str(path), counts=counts)]
    assert got == whole[:4] and counts["truncated_shards"] == 1

