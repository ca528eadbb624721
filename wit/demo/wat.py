"""Common Crawl-style WAT files: a gzipped WARC of `metadata` records whose JSON payload
describes one record of a crawl. For an HTML response the image candidates sit under
Envelope → Payload-Metadata → HTTP-Response-Metadata → HTML-Metadata → Links, as
entries with path "IMG@/src" (and `alt`/`title` when the tag has them)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable

from warcio.warcwriter import WARCWriter


@dataclass
class WatImage:
    src: str
    alt: str | None = None
    title: str | None = None
    data_image_title: str | None = None


@dataclass
class WatPage:
    url: str
    images: list[WatImage]
    base: str | None = None
    other_links: list[tuple[str, str]] = field(default_factory=list)  # (path, url), e.g. ("A@/href", "/x")


def envelope(warc_type: str, url: str, payload_metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one WAT record, describing a WARC record of `warc_type` for `url`."""
    return {
        "Container": {"Filename": "CC-MAIN-demo.warc.gz", "Compressed": True},
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
        if image.data_image_title is not None:
            link["data-image-title"] = image.data_image_title
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


def write_wat(path: Path, records: Iterable[tuple[str, dict | bytes]], description: str = "WAT") -> Path:
    """Write (target url, WAT JSON or raw payload bytes) records as a gzipped WAT file after
    a warcinfo record; record ids derive from the content, so the bytes are reproducible."""
    path = Path(path)
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {
            "software": "wit.demo.wat", "format": "WARC File Format 1.0", "description": description}))
        for url, record in records:
            payload = record if isinstance(record, bytes) else json.dumps(record).encode()
            refers = uuid.UUID(bytes=hashlib.blake2b(url.encode() + payload, digest_size=16).digest())
            writer.write_record(writer.create_warc_record(
                url, "metadata", payload=BytesIO(payload), length=len(payload),
                warc_content_type="application/json", warc_headers_dict={"WARC-Refers-To": f"<urn:uuid:{refers}>"}))
    return path
