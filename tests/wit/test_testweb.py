"""Checks of the test infrastructure: the local web server and the WAT writer."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from tests.wit.testweb import TestWeb
from tests.wit.watgen import WatImage, WatPage, truncate_file, write_wat


@pytest.fixture(scope="module")
def web() -> Iterator[TestWeb]:
    with TestWeb() as server:
        yield server


def get(web: TestWeb, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """(status, headers, body) of GET `path`, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_request(web: TestWeb, path: str, timeout: float) -> socket.socket:
    """A socket that has sent GET `path` and waits at most `timeout` per read."""
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    sock.settimeout(timeout)
    return sock


def test_images_are_valid_and_differ_by_name(web: TestWeb) -> None:
    status, headers, a = get(web, "/img/a.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert int(headers["Content-Length"]) == len(a)
    image = Image.open(io.BytesIO(a))
    image.load()
    assert (image.format, image.size) == ("JPEG", (320, 240))
    assert get(web, "/img/a.jpg")[2] == a
    assert get(web, "/img/b.jpg")[2] != a
    status, headers, png = get(web, "/img/a.png?w=80&h=60")
    assert headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png)).size == (80, 60)


def test_error_and_redirect_routes(web: TestWeb) -> None:
    assert get(web, "/404")[0] == 404
    assert get(web, "/500")[0] == 500
    assert get(web, "/no/such/route")[0] == 404
    status, headers, _ = get(web, "/redirect-loop")
    assert (status, headers["Location"]) == (302, "/redirect-loop")
    status, headers, _ = get(web, "/redirect-to/img/x.jpg")
    assert (status, headers["Location"]) == (302, "/img/x.jpg")


def test_broken_content_routes(web: TestWeb) -> None:
    status, headers, body = get(web, "/noai.jpg")
    assert status == 200 and headers["X-Robots-Tag"] == "noai"
    Image.open(io.BytesIO(body)).load()
    _, headers, body = get(web, "/truncated.jpg")
    assert int(headers["Content-Length"]) == len(body) and body.startswith(b"\xff\xd8")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(body)).load()
    _, headers, body = get(web, "/html.jpg")
    assert headers["Content-Type"] == "image/jpeg" and body.startswith(b"<html>")


def test_huge_png_declares_30000_squared(web: TestWeb) -> None:
    _, headers, body = get(web, "/huge.png")
    assert headers["Content-Type"] == "image/png" and len(body) < 2_000_000
    assert body[12:16] == b"IHDR"
    assert struct.unpack(">II", body[16:24]) == (30000, 30000)


def test_drip_is_slow(web: TestWeb) -> None:
    received = b""
    deadline = time.monotonic() + 2
    with raw_request(web, "/drip", timeout=0.2) as sock:
        while time.monotonic() < deadline:
            try:
                received += sock.recv(65536)
            except TimeoutError:
                pass
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Content-Length: 100000" in head
    assert len(body) <= 3


def test_stall_sends_nothing(web: TestWeb) -> None:
    with raw_request(web, "/stall", timeout=1) as sock, pytest.raises(TimeoutError):
        sock.recv(1)
    assert get(web, "/404")[0] == 404  # stalled handlers do not block others


def test_stop_kills_the_process_and_frees_the_port() -> None:
    web = TestWeb()
    assert get(web, "/img/x.jpg")[0] == 200
    web.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(web.pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", web.port), timeout=2).close()


def read_wat(path: Path) -> tuple[list[str], list[dict], int]:
    """(record types, parsed JSON payloads, count of unparseable payloads) of a WAT file."""
    types, envelopes, corrupt = [], [], 0
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            types.append(record.rec_type)
            payload = record.content_stream().read()
            if record.rec_type != "metadata":
                continue
            assert record.rec_headers.get_header("Content-Type") == "application/json"
            try:
                envelopes.append(json.loads(payload))
            except json.JSONDecodeError:
                corrupt += 1
    return types, envelopes, corrupt


def test_write_wat_round_trip(tmp_path: Path) -> None:
    pages = [
        WatPage("http://a.test/dir/p.html", [WatImage("img/a.jpg", "a red dog"), WatImage("/b.png", title="b")],
                base="http://cdn.test/", other_links=[("A@/href", "/other")]),
        WatPage("http://b.test/", [WatImage("c.jpg")]),
    ]
    types, envelopes, corrupt = read_wat(write_wat(tmp_path / "x.wat.gz", pages, corrupt_json_after={0}))
    assert types == ["warcinfo"] + ["metadata"] * 5 and corrupt == 1
    warc_types = [e["Envelope"]["WARC-Header-Metadata"]["WARC-Type"] for e in envelopes]
    assert warc_types == ["response", "response", "request", "response"]
    html = [e["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
            for e in envelopes if "HTML-Metadata" in e["Envelope"]["Payload-Metadata"].get("HTTP-Response-Metadata", {})]
    assert len(html) == 2
    assert html[0]["Head"]["Base"] == "http://cdn.test/" and "Base" not in html[1]["Head"]
    assert html[0]["Links"] == [
        {"path": "IMG@/src", "url": "img/a.jpg", "alt": "a red dog"},
        {"path": "IMG@/src", "url": "/b.png", "title": "b"},
        {"path": "A@/href", "url": "/other"},
    ]
    assert html[1]["Links"] == [{"path": "IMG@/src", "url": "c.jpg"}]
    assert envelopes[0]["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"] == "http://a.test/dir/p.html"

    plain = write_wat(tmp_path / "plain.wat.gz", pages, include_non_html=False)
    assert read_wat(plain)[0] == ["warcinfo", "metadata", "metadata"]
    size = plain.stat().st_size
    truncate_file(plain, 0.5)
    assert plain.stat().st_size == size // 2
