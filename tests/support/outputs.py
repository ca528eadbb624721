"""Reading back what a stage left in a directory."""

from __future__ import annotations

from pathlib import Path


def files(directory: Path) -> dict[str, bytes]:
    """Every file directly in `directory`, by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def markers(units) -> dict[str, int]:
    """The finished units' markers (not a marker being written) and their mtimes."""
    return {p.name: p.stat().st_mtime_ns for p in units.glob("[!.]*.json")} if units.is_dir() else {}
