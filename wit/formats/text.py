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
