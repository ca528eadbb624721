"""The uid of a sample: exactly 32 lower-case hex digits, derived from its image url."""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

UID_LENGTH = 32
_UID = re.compile(r"[0-9a-f]{32}")


def url_uid(url: str) -> str:
    """Stable id of a url (BLAKE2b, 128 bits): the same url, the same id."""
    return hashlib.blake2b(url.encode("utf-8"), digest_size=16).hexdigest()


def url_uids(urls: Iterable[str]) -> list[str]:
    """`url_uid` of every url, in one loop (no function call per url)."""
    blake2b = hashlib.blake2b
    return [blake2b(url.encode("utf-8"), digest_size=16).hexdigest() for url in urls]


def is_uid(value: object) -> bool:
    """Whether `value` is a well-formed uid (so it is safe as a file or member name)."""
    return isinstance(value, str) and _UID.fullmatch(value) is not None
