"""Synthetic Common Crawl WAT files for tests.

A WAT file is a gzipped WARC of `metadata` records whose payload is JSON describing one
record of the original WARC. For an HTML response the image candidates sit under
Envelope → Payload-Metadata → HTTP-Response-Metadata → HTML-Metadata → Links, as
entries with path "IMG@/src".
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Set
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from warcio.warcwriter import WARCWriter

CORRUPT_JSON = b'{"Envelope": {broken'


@dataclass
class WatImage:
    src: str
    alt: str | None = None
    title: str | None = None


@dataclass
class WatPage:
    url: str
    images: list[WatImage]
    base: str | None = None
    other_links: list[tuple[str, str]] = field(default_factory=list)  # (path, url), e.g. ("A@/href", "/x")


def envelope(warc_type: str, url: str, payload_metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one WAT record, describing a WARC record of `warc_type` for `url`."""
    return {
        "Container": {"Filename": "CC-MAIN-test.warc.gz", "Compressed": True},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": url},
            "Payload-Metadata": payload_metadata,
        },
    }


def html_envelope(page: WatPage, title: str) -> dict[str, Any]:
    """The WAT JSON of an HTML response: its head and its links, images first."""
    links: list[dict[str, str]] = []
    for image in page.images:
        link = {"path": "IMG@/src", "url": image.src}
        if image.alt is not None:
            link["alt"] = image.alt
        if image.title is not None:
            link["title"] = image.title
        links.append(link)
    links += [{"path": path, "url": url} for path, url in page.other_links]
    head = {"Title": title} if page.base is None else {"Title": title, "Base": page.base}
    return envelope("response", page.url, {
        "Actual-Content-Type": "application/http; msgtype=response",
        "HTTP-Response-Metadata": {
            "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
            "Headers": {"Content-Type": "text/html; charset=utf-8"},
            "HTML-Metadata": {"Head": head, "Links": links},
        },
    })


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

    The file starts with a warcinfo record, then has one metadata record per page. After
    page i comes an invalid-JSON record when i is in `corrupt_json_after`; after the first
    page (and its corrupt record, if any) come a non-HTML response and a request record
    when `include_non_html` is true.
    """
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {
            "software": "tests.wit.watgen", "format": "WARC File Format 1.0",
            "description": "synthetic WAT for tests",
        }))

        def write(url: str, payload: bytes) -> None:
            writer.write_record(writer.create_warc_record(
                url, "metadata", payload=BytesIO(payload), length=len(payload),
                warc_content_type="application/json",
                warc_headers_dict={"WARC-Refers-To": f"<urn:uuid:{uuid.uuid4()}>"},
            ))

        for i, page in enumerate(pages):
            write(page.url, json.dumps(html_envelope(page, f"Page {i}")).encode())
            if i in corrupt_json_after:
                write(page.url, CORRUPT_JSON)
            if i == 0 and include_non_html:
                for extra in non_html_envelopes(page.url):
                    target = extra["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]
                    write(target, json.dumps(extra).encode())
    return path


def truncate_file(path: Path, keep_fraction: float) -> None:
    """Cut `path` to `keep_fraction` of its bytes, like an interrupted download."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    os.truncate(path, int(path.stat().st_size * keep_fraction))
