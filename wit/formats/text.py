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
