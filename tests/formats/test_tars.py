"""The one tar reader (file index and stream) and the deterministic writer."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

import numpy as np

from wit.formats.tars import (_scan_plain, _scan_with_tarfile, image_extension, read_member, scan_tar,
                              stream_samples, write_tar)


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


HOSTILE = ["a/K.jpg", "a/K.txt", "b/K.jpg", "b/K.txt", "L.png", "L.jpg", "L.txt", "a/K.json",  # a/K again
           "M.jpg", "M.JPG", "N.txt", "../x.txt", "/abs.txt", "noext", "O.tar.gz", "O.txt"]


def hostile_tar(path) -> None:
    with tarfile.open(path, "w") as tar:
        for name in HOSTILE:
            add(tar, name, name.encode())
        add(tar, "P.jpg", b"", tarfile.SYMTYPE, "/etc/passwd")


def test_webdataset_grouping_and_the_safety_rules(tmp_path):
    hostile_tar(tmp_path / "h.tar")
    scan = scan_tar(str(tmp_path / "h.tar"))
    assert [(key, sorted(parts)) for key, parts in scan.samples] == [
        ("a/K", ["jpg", "txt"]), ("b/K", ["jpg", "txt"]),     # two samples: the key is the path's
        ("L", ["jpg", "png", "txt"]), ("N", ["txt"]), ("O", ["tar.gz", "txt"])]
    assert scan.refused == {"duplicate_key": 1,       # a/K.json comes back after other keys: dropped
                            "duplicate_member": 1,    # M.jpg and M.JPG: the sample is dropped
                            "path_traversal": 1, "absolute_path": 1, "no_extension": 1, "link": 1}
    assert image_extension(dict(scan.samples)["L"]) == "jpg"   # one preference for every reader


def test_the_stream_reader_gives_what_the_index_gives(tmp_path):
    hostile_tar(tmp_path / "h.tar")
    scan = scan_tar(str(tmp_path / "h.tar"))
    with open(tmp_path / "h.tar", "rb") as f:
        indexed = [(k, {e: read_member(f, m) for e, m in parts.items()}) for k, parts in scan.samples]
    for skip in range(len(indexed) + 1):
        refused: Counter[str] = Counter()
        with open(tmp_path / "h.tar", "rb") as f:
            streamed = [(s.key, s.parts) for s in stream_samples(f, ("jpg", "png", "txt", "tar.gz"), skip, refused)]
        assert streamed == indexed[skip:] and refused == scan.refused


def test_tar_writer_matches_tarfile():
    """The template-built headers give exactly the bytes of Python's tarfile (GNU format,
    mtime 0, root, 0644), long and non-ASCII names, small and larger members and an
    empty archive included."""
    rng = np.random.default_rng(7)
    names = ["0" * 32, "a" * 95, "b" * 99, "c" * 100, "d" * 140, "bild-ä€", "x"]

    def size() -> int:
        return int(rng.integers(0, 3000) if rng.random() < 0.7 else rng.integers(4000, 9000))

    samples = [(name, [(ext, rng.bytes(size())) for ext in ("jpg", "json", "txt")]) for name in names for _ in range(4)]
    for chosen in (samples, []):
        reference = io.BytesIO()
        with tarfile.open(fileobj=reference, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for key, parts in chosen:
                for ext, data in parts:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
                    tar.addfile(info, io.BytesIO(data))
        ours = io.BytesIO()
        write_tar(ours, iter(chosen))
        assert ours.getvalue() == reference.getvalue()
        with tarfile.open(fileobj=io.BytesIO(ours.getvalue())) as tar:
            assert tar.getnames() == [f"{key}.{ext}" for key, parts in chosen for ext, _ in parts]


def test_direct_header_scan_matches_tarfile(tmp_path):
    """scan_tar's direct header reading gives what reading with tarfile gives, on tars of
    every format and member kind, and after random truncation and corrupted bytes."""
    rng = np.random.default_rng(3)
    kinds = [tarfile.REGTYPE] * 6 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                      tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.AREGTYPE]
    names = ["{k}.jpg", "{k}.txt", "dir/{k}.json", "/abs/{k}.jpg", "../{k}.jpg", "a\\{k}.txt", "bild-ä-{k}.txt",
             "{k}/", "p" * 90 + "/{k}.jpg", "p" * 90 + "/" + "q" * 30 + "/{k}.jpg", "{k}" + "x" * 120 + ".jpg"]
    direct = 0
    for case in range(60):
        path = tmp_path / f"{case}.tar"
        fmt = (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)[case % 3]
        with tarfile.open(path, "w", format=fmt) as tar:
            for k in range(int(rng.integers(1, 12))):
                name = str(rng.choice(names)).format(k=k)
                if fmt == tarfile.USTAR_FORMAT and len(name) > 100 and "/" not in name:
                    continue  # not representable in ustar
                try:
                    add(tar, name, rng.bytes(int(rng.integers(0, 1500))), rng.choice(kinds).tobytes(), "target")
                except ValueError:
                    continue
        data = bytearray(path.read_bytes())
        if case % 4 == 1:
            data = data[: int(rng.integers(0, len(data)))]
        elif case % 4 == 2:
            for at in rng.integers(0, len(data), 3):
                data[at] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        ours, reference = scan_tar(str(path)), _scan_with_tarfile(str(path))
        assert ours == reference, case
        direct += _scan_plain(str(path)) is not None
    assert direct >= 20  # the direct reading really took part