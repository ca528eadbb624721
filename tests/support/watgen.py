"""Synthetic Common Crawl WAT files for tests: pages plus the defects real files have
(invalid JSON records, non-HTML records, truncation). The format is wit.demo.wat's."""

from __future__ import annotations

import os
from collections.abc import Set
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from wit.demo.wat import WatImage, WatPage, envelope, html_envelope, write_wat as write_records

__all__ = ["WatImage", "WatPage", "CORRUPT_JSON", "write_wat", "truncate_file"]

CORRUPT_JSON = b'{"Envelope": {broken'


def non_html_envelopes(url: str) -> list[dict[str, Any]]:
    """A non-HTML response and a request record: real WAT content with no image candidates."""
    robots = urljoin(url, "/robots.txt")
    response = envelope("response", robots, {
        "Actual-Content-Type": "application/http; msgtype=response",
        "HTTP-Response-Metadata": {
            "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
            "Headers": {"Content-Type": "text/plain"},
            "Entity-Length": 25,
        },
    })
    request = envelope("request", url, {
        "Actual-Content-Type": "application/http; msgtype=request",
        "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": "/", "Version": "HTTP/1.1"}},
    })
    return [response, request]


def write_wat(path: Path, pages: list[WatPage], corrupt_json_after: Set[int] = frozenset(),
              include_non_html: bool = True) -> Path:
    """Write `pages` as a gzipped WAT file and return `path`.

    One metadata record per page. After page i comes an invalid-JSON record when i is in
    `corrupt_json_after`; after the first page (and its corrupt record, if any) come a
    non-HTML response and a request record when `include_non_html` is true.
    """
    def records():
        for i, page in enumerate(pages):
            yield page.url, html_envelope(page, f"Page {i}")
            if i in corrupt_json_after:
                yield page.url, CORRUPT_JSON
            if i == 0 and include_non_html:
                for extra in non_html_envelopes(page.url):
                    yield extra["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"], extra

    return write_records(path, records(), "synthetic WAT for tests")


def truncate_file(path: Path, keep_fraction: float) -> None:
    """Cut `path` to `keep_fraction` of its bytes, like an interrupted download."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    os.truncate(path, int(path.stat().st_size * keep_fraction))
