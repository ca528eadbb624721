"""The text's language (DataComp's basic filtering keeps English): identified offline by
the same model as `wit crawl`'s worldwide matching (`wit.formats.languages`), kept when it
is one of a list of Wikipedia language codes."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from wit.filter.removal import Removed
from wit.formats.languages import LanguageIdentifier

BATCH = 65536


class Language:
    """Removes the samples whose text is not in one of `languages` (the match: the language
    identified, a Wikipedia code, or `other` when the model names none)."""
    name = "language"

    @classmethod
    def from_config(cls, config, inputs) -> "Language | None":
        return cls(config.languages) if config.languages else None

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.languages = frozenset(languages)
        self.identifier = LanguageIdentifier(self.languages)

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        rows = np.flatnonzero(alive)
        texts = samples["text"]
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            for row, code in zip(batch, self.identifier.codes(texts.take(pa.array(batch)).to_pylist())):
                if code not in self.languages:
                    yield Removed(int(row), "language", code)
