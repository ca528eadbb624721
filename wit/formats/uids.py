"""The uid of a sample: exactly 32 lower-case hex digits, derived from its image url."""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

UID_LENGTH = 32
_UID = re.compile(r"[0-9a-f]{32}")


def url_uids(urls: Iterable[str]) -> list[str]:
    """Stable id of each url (BLAKE2b, 128 bits): the same url, the same id; one loop, no
    function call per url."""
    blake2b = hashlib.blake2b
    return [blake2b(url.encode("utf-8"), digest_size=16).hexdigest() for url in urls]


def url_uid(url: str) -> str:
    """The id of one url (`url_uids`)."""
    return url_uids((url,))[0]


def is_uid(value: object) -> bool:
    """Whether `value` is a well-formed uid (so it is safe as a file or member name)."""
    return isinstance(value, str) and _UID.fullmatch(value) is not None
