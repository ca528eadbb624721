"""How a stage names its inputs in the fingerprint it claims its output with
(`wit.formats.workdir.claim`): by content for what decides the output's meaning (a dump, a
query list: its sha256), by name, size and mtime for large inputs read again on every run
(tars, evaluation sets), where a changed file shows as a changed size or mtime."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable

from wit.formats.atomic import file_sha256


def describe_file(path: str, what: str = "input file") -> dict:
    """A file by content: its absolute path, size and sha256."""
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": file_sha256(path, what)}


def describe_stat(path: str) -> dict:
    """A file by name, size and modification time (nanoseconds)."""
    stat = os.stat(path)
    return {"name": os.path.basename(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def describe_listing(root: str, files: Iterable[str]) -> dict:
    """Many files under `root` at once: their count and the sha256 of their relative names,
    sizes and modification times."""
    listing = [(os.path.relpath(str(f), root), st.st_size, st.st_mtime_ns) for f, st in ((f, os.stat(f)) for f in files)]
    return {"path": os.path.abspath(root), "files": len(listing),
            "sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
