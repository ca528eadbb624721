"""Wikimedia page-view dumps (`pageviews-YYYYMMDD-HHMMSS.gz`): one Wikipedia's views per title.

Each line is `domain_code page_title count_views total_response_size`. Only the lines of
the wanted Wikipedia count: `en` (desktop) and `en.m` (mobile) for English, `de` and
`de.m` for `--lang de`, `zh-yue` for `zh_yue`; `en.d` and the like are other projects.
Titles get spaces for underscores, and titles with a colon (other namespaces) are dropped.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from dataclasses import dataclass, field

from wit.formats.errors import WitError

ENGLISH = "en"
MAX_VIEWS = 2**63 - 1   # views are int64 in queries.parquet


@dataclass
class PageViews:
    views: Counter[str] = field(default_factory=Counter)
    lines: int = 0
    malformed_lines: int = 0
    files: list[str] = field(default_factory=list)


def domain_codes(lang: str) -> tuple[bytes, bytes]:
    """The page-view domain codes of a Wikipedia (desktop, mobile): its code with `-` for `_`."""
    code = lang.replace("_", "-").encode()
    return code, code + b".m"


def read_pageviews(files: list[str], lang: str = ENGLISH) -> PageViews:
    """Sum the views per title of Wikipedia `lang` over `files` (gzip or plain text)."""
    result = PageViews(files=list(files))
    wanted = domain_codes(lang)
    for path in files:
        try:
            with _open(path) as f:
                for number, line in enumerate(f, 1):
                    if _add_line(line, result, wanted) > MAX_VIEWS:
                        raise WitError(f"{path}: line {number}: views of {line.split()[1].decode(errors='replace')!r} "
                                       f"add up to more than {MAX_VIEWS:,} (2^63 - 1)")
        except (OSError, EOFError, zlib.error) as e:
            raise WitError(f"{path}: cannot read page-view file ({e})") from None
    return result


def _open(path: str):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _add_line(line: bytes, result: PageViews, wanted: tuple[bytes, ...]) -> int:
    """Count one line; the title's views so far (0 for a line that does not count)."""
    result.lines += 1
    fields = line.split()
    if len(fields) != 4 or not fields[2].isdigit() or not fields[3].isdigit():
        result.malformed_lines += 1
        return 0
    if fields[0] not in wanted:
        return 0
    try:
        title = fields[1].decode("utf-8").replace("_", " ")
    except UnicodeDecodeError:
        result.malformed_lines += 1
        return 0
    if ":" in title:
        return 0
    result.views[title] += int(fields[2])
    return result.views[title]
