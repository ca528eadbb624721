"""Unigram and bigram counts of plain text, with the tokenisation MetaCLIP's matching implies.

A counted word or bigram is a string that can match a text under substring matching:
1. optionally lower-case the text;
2. split at the punctuation marks that matching spaces out (`, . ; : ? ! ``) and at
   line breaks (these also end a bigram), and at round brackets and double quotes
   (typographic ones too), which are not part of words;
3. split at whitespace;
4. drop quote marks (' ‘ ’) at the start or end of a token;
5. a token is a word when it holds a letter or a digit and none of the wiki markup
   characters ``[ ] { } | < > =`` (a guard against markup the cleaner missed);
6. a bigram is two words next to each other; a non-word token between them, or a
   split of step 2, breaks the pair.

Tokens are dictionary-encoded with Arrow and pairs counted as integer codes with NumPy,
so the per-token work runs in C; word tests run once per distinct token.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.text import SPACED_PUNCTUATION

BREAK = "\x00"  # a token that is never a word: stands where a bigram may not span
_BREAKING = SPACED_PUNCTUATION + ("\n",)
_SPACING = ("\t", "\r", "(", ")", '"', "\u201c", "\u201d", "\u201e", "\u00ab", "\u00bb")
_EDGE_QUOTES = r"^['\x{2018}\x{2019}]+|['\x{2018}\x{2019}]+$"
_HAS_ALNUM = r"[\pL\pN]"
_MARKUP = r"[\[\]{}|<>=]"

UNIGRAM_SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])
BIGRAM_SCHEMA = pa.schema([("first", pa.string()), ("second", pa.string()), ("count", pa.int64())])


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Raw tokens of `text` (steps 1-3): words, other tokens and BREAKs, in order."""
    if lowercase:
        text = text.lower()
    for mark in _BREAKING:
        text = text.replace(mark, f" {BREAK} ")
    for char in _SPACING:
        text = text.replace(char, " ")
    return text.split()


def count_ngrams(texts: Iterable[str], lowercase: bool = False) -> tuple[pa.Table, pa.Table]:
    """(unigrams, bigrams) of `texts`, no bigram spanning two texts: tables with columns
    word, count and first, second, count."""
    tokens: list[str] = []
    for text in texts:  # one at a time: a text without non-ASCII stays 1 byte per character
        tokens += tokenize(text, lowercase)
        tokens.append(BREAK)
    if not tokens:
        return UNIGRAM_SCHEMA.empty_table(), BIGRAM_SCHEMA.empty_table()
    encoded = pa.array(tokens, pa.string()).dictionary_encode()
    words, word_ids, is_word = _words(encoded.dictionary)
    ids = word_ids[encoded.indices.to_numpy()]  # tokens equal after step 4 share an id
    size = len(words)

    unigram_counts = np.bincount(ids, minlength=size)
    unigrams = pa.table({"word": words.filter(is_word), "count": unigram_counts[is_word]},
                        schema=UNIGRAM_SCHEMA)
    codes, counts = np.unique(ids[:-1] * size + ids[1:], return_counts=True)
    first, second = codes // size, codes % size
    keep = is_word[first] & is_word[second]
    bigrams = pa.table(
        {"first": words.take(first[keep]), "second": words.take(second[keep]), "count": counts[keep]},
        schema=BIGRAM_SCHEMA,
    )
    return unigrams, bigrams


def _words(vocabulary: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The distinct tokens after step 4, the id of each vocabulary entry among them, and
    which of them are words (step 5)."""
    stripped = pc.replace_substring_regex(vocabulary, _EDGE_QUOTES, "").dictionary_encode()
    words = stripped.dictionary
    is_word = pc.and_(
        pc.match_substring_regex(words, _HAS_ALNUM),
        pc.invert(pc.match_substring_regex(words, _MARKUP)),
    )
    return words, stripped.indices.to_numpy().astype(np.int64), is_word.to_numpy(zero_copy_only=False)
