"""Text rules that need no model: each answers, per sample, whether a rule removes it."""

from __future__ import annotations

import posixpath
import re
from typing import Iterator
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa

from wit.filter.removal import Removed

IMAGE_FILE = re.compile(r"\S+\.(jpe?g|png|gif|webp|bmp|tiff?|svg|heic|avif)", re.IGNORECASE)
URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)


def url_file_name(url: str) -> str:
    """The file name at the end of a url's path, percent-decoded ('' for none)."""
    return unquote(posixpath.basename(urlsplit(url).path))


def is_file_name(text: str, url: str) -> bool:
    """The text is a file name: an image file name, or the url's file name with or
    without its extension."""
    text = text.strip()
    name = url_file_name(url)
    return bool(IMAGE_FILE.fullmatch(text)) or (bool(name) and text in (name, posixpath.splitext(name)[0]))


def is_url(text: str, url: str) -> bool:
    """The text is a url: the sample's own or any other."""
    text = text.strip()
    return text == url or bool(URL.fullmatch(text))


def first_rule(text: str, url: str, min_words: int, max_length: int, file_names: bool,
               urls: bool, min_length: int = 0) -> tuple[str, float | None] | None:
    """(the first rule that removes the sample, its measure), or None to keep it. Rules in
    order, the specific ones first: file_name, url, min_words (words, split on whitespace),
    min_length and max_length (characters)."""
    if file_names and is_file_name(text, url):
        return "file_name", None
    if urls and is_url(text, url):
        return "url", None
    words = len(text.split())
    if min_words and words < min_words:
        return "min_words", float(words)
    length = len(text)
    if min_length and length < min_length:
        return "min_length", float(length)
    if max_length and length > max_length:
        return "max_length", float(length)
    return None


class TextRules:
    name = "text"

    @classmethod
    def from_config(cls, config, inputs) -> "TextRules | None":
        rules = (config.min_words, config.max_length, config.drop_file_names, config.drop_urls, config.min_length)
        return cls(*rules) if any(rules) else None

    def __init__(self, min_words: int, max_length: int, drop_file_names: bool, drop_urls: bool,
                 min_length: int = 0) -> None:
        self.rules = (min_words, max_length, drop_file_names, drop_urls, min_length)

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        texts, urls = samples["text"].to_pylist(), samples["url"].to_pylist()
        for row in np.flatnonzero(alive):
            found = first_rule(texts[row], urls[row], *self.rules)
            if found is not None:
                yield Removed(int(row), found[0], value=found[1])
