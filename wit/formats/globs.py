"""The one glob expander: local paths and fsspec urls, with brace patterns (`{0..9}`)."""

from __future__ import annotations

import glob
import os

import braceexpand
import fsspec

from wit.formats.errors import WitError

GLOB_CHARACTERS = "*?["


def expand(patterns: list[str] | tuple[str, ...], what: str, check_plain: bool = True) -> list[str]:
    """The files each pattern names, pattern by pattern, each pattern's sorted; a pattern
    may be a brace pattern, a glob or a plain path, local or an fsspec url. A pattern that
    names nothing is an error naming it and `what` was looked for. Local files are
    given as absolute paths. With `check_plain`
    false, names without glob characters are taken as they are (urls, `pipe:` commands)."""
    files: list[str] = []
    for pattern in patterns:
        found: list[str] = []
        for name in braceexpand.braceexpand(pattern):
            if any(c in name for c in GLOB_CHARACTERS) and not name.startswith("pipe:"):
                found += _glob(name)
            else:
                found += _existing(name) if check_plain else [name]
        if not found:
            raise WitError(f"{pattern}: no {what} file matches")
        files += sorted(dict.fromkeys(found))
    return files


def _glob(pattern: str) -> list[str]:
    if "://" not in pattern:
        return [os.path.abspath(p) for p in glob.glob(pattern) if os.path.isfile(p)]
    fs, path = fsspec.core.url_to_fs(pattern)
    return [fs.unstrip_protocol(p) for p in fs.glob(path)]


def _existing(name: str) -> list[str]:
    if "://" not in name:
        return [os.path.abspath(name)] if os.path.isfile(name) else []
    fs, path = fsspec.core.url_to_fs(name)
    return [name] if fs.exists(path) else []
