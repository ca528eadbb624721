"""The class names and prompt templates CLIP_benchmark ships (the CLIP paper's prompts, and
its translations: ar, it, ja and zh), read from the installed `clip-benchmark` package's
JSON files without importing it (its imports pull in heavy dependencies)."""

from __future__ import annotations

import importlib.metadata
import json
from functools import lru_cache

from wit.formats.errors import WitError

FILES = {"classnames": "clip_benchmark/datasets/{}_classnames.json",
         "templates": "clip_benchmark/datasets/{}_zeroshot_classification_templates.json"}
CODES = {"ja": "jp", "zh": "cn"}   # Wikipedia's code -> clip-benchmark's file prefix, where they differ
LANGUAGES = ("ar", "en", "it", "ja", "zh")   # the languages it has lists for


@lru_cache(maxsize=None)
def lists(kind: str, lang: str = "en") -> dict[str, list[str]]:
    """{dataset key: list} for kind `classnames` or `templates` (templates hold `{c}`) in
    `lang` (a Wikipedia code); {} for a language clip-benchmark has no lists for."""
    if lang not in LANGUAGES:
        return {}
    try:
        path = importlib.metadata.distribution("clip-benchmark").locate_file(FILES[kind].format(CODES.get(lang, lang)))
    except importlib.metadata.PackageNotFoundError:
        raise WitError(f"clip-benchmark is not installed (its {kind} lists are needed): "
                       "pip install --no-deps clip-benchmark") from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WitError(f"{path}: cannot read clip-benchmark's {kind} ({e})") from None


def lookup(kind: str, key: str, lang: str = "en") -> list[str] | None:
    """clip-benchmark's `kind` list for dataset `key` in `lang`, or None if it has none."""
    found = lists(kind, lang).get(key)
    return list(found) if found is not None else None
