"""Word segmentation of languages written without spaces, for counting unigrams and
bigrams (MetaCLIP 2 `wit build-queries --lang`): the text comes back with a space between
words, so counting is the same as for any language. Segmenters that install from PyPI and
run on a CPU, with their dictionaries inside the package:
- zh, zh_yue, zh_classical: jieba (its bundled dictionary);
- ja: fugashi (MeCab) with unidic-lite;
- th: PyThaiNLP's `newmm` (dictionary-based maximal matching).
Khmer, Lao, Burmese, Tibetan, Dzongkha and Okinawan have no segmenter here that runs
offline with a bundled model, and are refused with a one-line error."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

from wit.formats.errors import WitError
from wit.formats.languages import NO_SPACE_LANGUAGES

SEGMENTED = {"zh": "jieba", "zh_yue": "jieba", "zh_classical": "jieba", "ja": "fugashi", "th": "pythainlp"}
UNSUPPORTED = NO_SPACE_LANGUAGES - set(SEGMENTED)


def check_language(lang: str) -> None:
    """A one-line error for a language written without spaces that cannot be segmented here."""
    if lang in UNSUPPORTED:
        raise WitError(f"--lang {lang}: written without spaces, and no offline word segmenter for it is "
                       f"supported (segmented: {', '.join(sorted(SEGMENTED))})")


@lru_cache(maxsize=None)
def segmenter(lang: str) -> Callable[[str], str] | None:
    """text -> its words separated by spaces (None: the language is written with spaces)."""
    check_language(lang)
    kind = SEGMENTED.get(lang)
    if kind == "jieba":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        tokenizer = jieba.Tokenizer()
        return lambda text: " ".join(w for w in tokenizer.cut(text) if w.strip())
    if kind == "fugashi":
        import fugashi

        tagger = fugashi.Tagger()
        return lambda text: " ".join(word.surface for word in tagger(text))
    if kind == "pythainlp":
        from pythainlp.tokenize import word_tokenize

        return lambda text: " ".join(w for w in word_tokenize(text, engine="newmm", keep_whitespace=False) if w.strip())
    return None


def join_bigram(lang: str, bigram: str) -> str:
    """A bigram as a query: its two words joined without a space in a language written
    without spaces (MetaCLIP 2), as they are otherwise."""
    return bigram.replace(" ", "") if lang in NO_SPACE_LANGUAGES else bigram


def segmented_text(lang: str) -> Callable[[str], str] | None:
    """text -> the same text with a space between words, line by line (a line break ends a
    bigram, so it is kept); None for a language written with spaces."""
    segment = segmenter(lang)
    if segment is None:
        return None
    return lambda text: "\n".join(segment(line) if line.strip() else "" for line in text.split("\n"))
