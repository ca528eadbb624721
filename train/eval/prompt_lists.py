"""The class names and prompt templates CLIP_benchmark ships (the CLIP paper's prompts),
read from the installed `clip-benchmark` package's JSON files without importing it (its
imports pull in heavy dependencies)."""

from __future__ import annotations

import importlib.metadata
import json
from functools import lru_cache

from wit.formats.errors import WitError

FILES = {"classnames": "clip_benchmark/datasets/en_classnames.json",
         "templates": "clip_benchmark/datasets/en_zeroshot_classification_templates.json"}


@lru_cache(maxsize=None)
def lists(kind: str) -> dict[str, list[str]]:
    """{dataset key: list} for kind `classnames` or `templates` (templates hold `{c}`)."""
    try:
        path = importlib.metadata.distribution("clip-benchmark").locate_file(FILES[kind])
    except importlib.metadata.PackageNotFoundError:
        raise WitError(f"clip-benchmark is not installed (its {kind} lists are needed): "
                       "pip install --no-deps clip-benchmark") from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WitError(f"{path}: cannot read clip-benchmark's {kind} ({e})") from None


def lookup(kind: str, key: str) -> list[str] | None:
    """clip-benchmark's `kind` list for dataset `key`, or None if it has none."""
    found = lists(kind).get(key)
    return list(found) if found is not None else None
