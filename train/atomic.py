"""Atomic output: write to a temporary file beside the target, then rename over it, so a
reader sees the whole old file or the whole new one, never a part."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object for a temporary file beside `path`; flushed, synced and renamed to
    `path` when the block succeeds, removed when it fails."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    encoding = None if "b" in mode else "utf-8"
    f = tempfile.NamedTemporaryFile(mode, dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                    delete=False, encoding=encoding)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(f.name, 0o644)
        os.replace(f.name, target)
    finally:
        if os.path.exists(f.name):
            os.unlink(f.name)
