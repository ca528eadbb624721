"""MetaCLIP's text spacing, shared by query counting and substring matching."""

from __future__ import annotations

SPACED_PUNCTUATION = (",", ".", ";", ":", "?", "!", "`")
SPACE_CHARACTERS = ("\t", "\n", "\r")


def spaced(text: str) -> str:
    """Wrap `text` in spaces, put a space on both sides of each punctuation mark in
    SPACED_PUNCTUATION and turn tabs and line breaks into spaces (MetaCLIP's `spacing`).
    A query q matches a text t when f" {q} " occurs in spaced(t)."""
    text = f" {text} "
    for mark in SPACED_PUNCTUATION:
        text = text.replace(mark, f" {mark} ")
    for char in SPACE_CHARACTERS:
        text = text.replace(char, " ")
    return text


_SPACED_BYTES = tuple((mark.encode(), f" {mark} ".encode()) for mark in SPACED_PUNCTUATION)
_SPACE_BYTES = tuple(char.encode() for char in SPACE_CHARACTERS)


def spaced_bytes(text: bytes) -> bytes:
    """`spaced` on UTF-8 bytes (the same bytes as `spaced(t).encode()`): one byte a
    character whatever the text holds, where a str with one non-ASCII character takes two
    or four bytes for each."""
    text = b" " + text + b" "
    for mark, wrapped in _SPACED_BYTES:
        text = text.replace(mark, wrapped)
    for char in _SPACE_BYTES:
        text = text.replace(char, b" ")
    return text


# MetaCLIP 2 (worldwide): an entry is padded with a space only on a side whose character is
# neither punctuation nor "CJK-like", so that entries of languages written without spaces
# match inside words. Punctuation: ASCII's (Python's string.punctuation) and the full-width
# and CJK marks MetaCLIP 2's matcher adds. CJK-like: the CJK ideograph blocks (unified,
# extensions A to F, compatibility ideographs, radicals, Kangxi radicals, ideographic
# description characters) and the Thai, Lao, Burmese, Khmer and Tibetan blocks. Kana and
# Hangul are not in MetaCLIP 2's ranges, so a kana entry is padded; `kana=True` adds the
# Hiragana, Katakana, Katakana phonetic extension and half-width Katakana blocks.
ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
WIDE_PUNCTUATION = frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
CJK_LIKE_BLOCKS = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
)
KANA_BLOCKS = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))


def is_punctuation(char: str) -> bool:
    return char in ASCII_PUNCTUATION or char in WIDE_PUNCTUATION


def is_cjk_like(char: str, kana: bool = False) -> bool:
    """A character of a script written without spaces (MetaCLIP 2's ranges; with `kana`,
    Japanese kana too)."""
    point = ord(char)
    blocks = CJK_LIKE_BLOCKS + KANA_BLOCKS if kana else CJK_LIKE_BLOCKS
    return any(low <= point <= high for low, high in blocks)


def spaced_entry(entry: str, kana: bool = False) -> str:
    """The pattern a worldwide entry matches as (MetaCLIP 2's `get_spaced_metadata`): a
    space before it unless its first character is CJK-like or punctuation, and after it
    unless its last is. A spaced text contains the pattern exactly when it matches."""
    def bare(char: str) -> bool:
        return is_cjk_like(char, kana) or is_punctuation(char)

    return f"{'' if bare(entry[0]) else ' '}{entry}{'' if bare(entry[-1]) else ' '}"
