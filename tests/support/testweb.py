"""A local web server for crawl tests, run as a separate process on 127.0.0.1.

`python -m tests.support.testweb --port 0 [--log FILE]` binds a free port, prints one line
`PORT <n>` and serves forever, appending each request's path to FILE; tests use `TestWeb`,
which starts it and stops it by process id, and reads the log (`requests()`).

Routes (GET; HEAD sends the same status and headers without a body):

    /img/<name>.jpg, /img/<name>.png  a deterministic image drawn from <name>, 320x240
                                      unless the query sets `w` and `h` (e.g. ?w=800&h=600);
                                      `delay=S` waits S seconds (at most 5) before answering
    /404, /500                        that status
    /redirect-loop                    302 to itself, forever
    /redirect-to/<path>               302 to /<path> (keeping the query)
    /redirect?to=<url>                302 to <url>, whatever it is
    /big.jpg, /big-declared.jpg       1 GiB of bytes as fast as the client reads them, without or
                                      with a Content-Length
    /private/<name>.jpg               an image, which `--robots private` disallows
    /flaky/<name>.jpg?fails=N&how=H   fails the first N requests of this exact path and query
                                      (H: 503, 429, or reset: closes the connection unanswered),
                                      then serves the image /img/<name>.jpg
    /robots.txt                       404, or by `--robots`: `private` (Disallow: /private/),
                                      `delay` (the same with Crawl-delay: 30), `stall` (nothing for
                                      an hour), `error` (500)
    /concurrency                      the most requests the server has had in flight at once
    /stall                            accepts the request, then sends nothing for an hour
    /drip                             200 headers (image/jpeg, Content-Length 100000), then
                                      one byte a second
    /truncated.jpg                    the first half of a valid JPEG (Content-Length matches)
    /html.jpg                         an HTML page served as image/jpeg
    /huge.png                         a ~1 MB PNG declaring 30000x30000 pixels (a decompression bomb)
    /bomb.hdr                         a 6 MB Radiance HDR of 10000x10000 pixels (OpenCV decodes it: 1.2 GB)
    /bomb.tif                         a ~1 MB TIFF declaring 30000x30000 pixels (one deflated strip)
    /noai.jpg                         a valid JPEG with `X-Robots-Tag: noai`
    /page/<name>.html                 a small HTML page with a few <img> tags
    anything else                     404
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw

from tests.cli import REPO

DEFAULT_SIZE = (320, 240)
MAX_SIDE = 8000
BOMB_SIDE = 30000
DRIP_LENGTH = 100_000
STALL_SECONDS = 3600
IMG_ROUTE = re.compile(r"/img/([^/]+)\.(jpg|png)")
PAGE_ROUTE = re.compile(r"/page/([^/]+)\.html")


@lru_cache(maxsize=256)
def render_image(name: str, fmt: str, width: int, height: int) -> bytes:
    """Encode an image whose colours and shape are derived from a hash of `name`."""
    digest = hashlib.sha256(name.encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[0:3]))
    x0, y0 = digest[6] * width // 512, digest[7] * height // 512
    box = (x0, y0, x0 + width // 2, y0 + height // 2)
    ImageDraw.Draw(image).ellipse(box, fill=tuple(digest[3:6]))
    out = io.BytesIO()
    image.save(out, format="JPEG" if fmt == "jpg" else "PNG")
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_zlib(pieces: int, piece_length: int) -> bytes:
    """A zlib stream of `pieces * piece_length` zero bytes, without compressing them all: a
    full flush makes each compressed piece self-contained, and every piece is identical, so
    the first one is repeated; the stream is still valid zlib."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; header and trailer below
    piece = deflate.compress(bytes(piece_length)) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = (pieces * piece_length % 65521) << 16 | 1  # Adler-32 of zero bytes: a stays 1, b = length
    return b"\x78\xda" + piece * pieces + deflate.flush() + struct.pack(">I", adler)


def bomb_png(side: int = BOMB_SIDE, rows_per_piece: int = 100) -> bytes:
    """An all-black `side` x `side` 8-bit grayscale PNG, compressed to about 1 MB (each
    scanline a filter byte 0, then `side` zero bytes)."""
    if side % rows_per_piece:
        raise ValueError("side must be a multiple of rows_per_piece")
    stream = zeros_zlib(side // rows_per_piece, (side + 1) * rows_per_piece)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")


def bomb_tiff(side: int = BOMB_SIDE, rows_per_piece: int = 100) -> bytes:
    """An all-black `side` x `side` 8-bit grayscale TIFF in one deflated strip (about 1 MB)."""
    strip = zeros_zlib(side // rows_per_piece, side * rows_per_piece)
    tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 4, side), (279, 4, len(strip))]   # (tag, type: 3 SHORT 4 LONG, value)
    ifd_length = 2 + 12 * len(tags) + 4
    tags[5] = (273, 4, 8 + ifd_length)   # the strip follows the IFD
    entries = b"".join(struct.pack("<HHI", tag, kind, 1) + struct.pack("<I" if kind == 4 else "<HH", value,
                                                                       *(() if kind == 4 else (0,)))
                       for tag, kind, value in tags)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0) + strip


def bomb_hdr(side: int = 10_000) -> bytes:
    """A black `side` x `side` Radiance HDR: every scanline run-length encoded (new-style
    RLE: a 2, 2, width marker, then each of the 4 channels as runs of at most 127 zeros)."""
    runs, rest = divmod(side, 127)
    channel = bytes([128 + 127, 0]) * runs + (bytes([128 + rest, 0]) if rest else b"")
    line = bytes([2, 2, side >> 8, side & 0xFF]) + channel * 4
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {side} +X {side}\n".encode() + line * side


def page_html(name: str) -> bytes:
    """A small HTML page with a few images, some with alt text."""
    return (
        f"<html><head><title>{name}</title></head><body>\n"
        f'<img src="/img/{name}-1.jpg" alt="a picture of {name}">\n'
        f'<img src="/img/{name}-2.png" alt="another view of {name}">\n'
        f'<img src="/img/{name}-3.jpg">\n'
        "</body></html>\n"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    """Dispatches the routes listed in the module docstring."""

    huge_png: bytes = b""  # set by `make_server`
    huge_hdr: bytes = b""
    huge_tiff: bytes = b""
    log: str | None = None
    robots = "none"
    _flight = threading.Lock()
    in_flight = most_in_flight = 0
    failed: dict[str, int] = {}   # /flaky/ requests failed so far, by path and query

    def log_message(self, format: str, *args: object) -> None:
        """Requests go to the log file, not to stderr."""

    def do_GET(self) -> None:
        self.route(send_body=True)

    def do_HEAD(self) -> None:
        self.route(send_body=False)

    def route(self, send_body: bool) -> None:
        """Answer the request according to its path, counting the requests in flight."""
        if self.log:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(f"{self.path}\n")
        if self.path == "/concurrency":
            self.reply(200, str(Handler.most_in_flight).encode(), "text/plain", send_body)
            return
        with Handler._flight:
            Handler.in_flight += 1
            Handler.most_in_flight = max(Handler.most_in_flight, Handler.in_flight)
        try:
            self.answer(send_body)
        finally:
            with Handler._flight:
                Handler.in_flight -= 1

    def answer(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path == "/robots.txt" and self.robots != "none":
            if self.robots == "stall":
                time.sleep(STALL_SECONDS)
            if self.robots == "error":
                self.reply(500, b"error", "text/plain", send_body)
                return
            delay = b"Crawl-delay: 30\n" if self.robots == "delay" else b""
            self.reply(200, b"User-agent: *\n" + delay + b"Disallow: /private/\n", "text/plain", send_body)
            return
        if path.startswith("/flaky/") and self.fail_flaky(parse_qs(url.query), send_body):
            return
        if path.startswith(("/private/", "/flaky/")):
            path = "/img/" + path.split("/", 2)[2]
        if image := IMG_ROUTE.fullmatch(path):
            query = parse_qs(url.query)
            size = self.requested_size(query)
            time.sleep(min(float(query.get("delay", ["0"])[0]), 5.0))
            if size is None:
                self.reply(400, b"bad size", "text/plain", send_body)
            else:
                name, fmt = image.groups()
                body = render_image(name, fmt, *size)
                self.reply(200, body, "image/jpeg" if fmt == "jpg" else "image/png", send_body)
        elif path in ("/404", "/500"):
            self.reply(int(path[1:]), b"error", "text/plain", send_body)
        elif path == "/redirect-loop":
            self.redirect("/redirect-loop")
        elif path == "/redirect":
            self.redirect(parse_qs(url.query)["to"][0])
        elif path in ("/big.jpg", "/big-declared.jpg"):
            self.big(path == "/big-declared.jpg", send_body)
        elif path.startswith("/redirect-to/"):
            self.redirect(path[len("/redirect-to"):] + (f"?{url.query}" if url.query else ""))
        elif path == "/stall":
            time.sleep(STALL_SECONDS)
        elif path == "/drip":
            self.drip(send_body)
        elif path == "/truncated.jpg":
            whole = render_image("truncated", "jpg", *DEFAULT_SIZE)
            self.reply(200, whole[: len(whole) // 2], "image/jpeg", send_body)
        elif path == "/html.jpg":
            self.reply(200, b"<html><body>not an image</body></html>", "image/jpeg", send_body)
        elif path == "/huge.png":
            self.reply(200, self.huge_png, "image/png", send_body)
        elif path == "/bomb.hdr":
            self.reply(200, self.huge_hdr, "image/vnd.radiance", send_body)
        elif path == "/bomb.tif":
            self.reply(200, self.huge_tiff, "image/tiff", send_body)
        elif path == "/noai.jpg":
            body = render_image("noai", "jpg", *DEFAULT_SIZE)
            self.reply(200, body, "image/jpeg", send_body, {"X-Robots-Tag": "noai"})
        elif page := PAGE_ROUTE.fullmatch(path):
            self.reply(200, page_html(page.group(1)), "text/html; charset=utf-8", send_body)
        else:
            self.reply(404, b"not found", "text/plain", send_body)

    def fail_flaky(self, query: dict[str, list[str]], send_body: bool) -> bool:
        """Fail this /flaky/ request if its path has failed fewer than `fails` times."""
        with Handler._flight:
            failed = Handler.failed.get(self.path, 0)
            if failed >= int(query.get("fails", ["1"])[0]):
                return False
            Handler.failed[self.path] = failed + 1
        how = query.get("how", ["503"])[0]
        if how == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.reply(int(how), b"try later", "text/plain", send_body)
        return True

    @staticmethod
    def requested_size(query: dict[str, list[str]]) -> tuple[int, int] | None:
        """(w, h) from the query, defaulting to 320x240; None when invalid."""
        try:
            width = int(query.get("w", [DEFAULT_SIZE[0]])[0])
            height = int(query.get("h", [DEFAULT_SIZE[1]])[0])
        except ValueError:
            return None
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            return None
        return width, height

    def reply(self, status: int, body: bytes, content_type: str, send_body: bool,
              extra_headers: dict[str, str] | None = None) -> None:
        """Send a complete response with an exact Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def redirect(self, location: str) -> None:
        """302 to `location` with an empty body (a non-ASCII location as its UTF-8 bytes, as
        servers send it)."""
        self.send_response(302)
        self.send_header("Location", location.encode("utf-8").decode("latin-1"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def big(self, declared: bool, send_body: bool) -> None:
        """1 GiB of zeros after a JPEG signature, a MiB at a time, until the client goes."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if declared:
            self.send_header("Content-Length", str(3 + (1 << 30)))
        self.end_headers()
        zeros = bytes(1 << 20)
        try:
            if send_body:
                self.wfile.write(b"\xff\xd8\xff")
                for _ in range(1024):
                    self.wfile.write(zeros)
        except (BrokenPipeError, ConnectionResetError):
            return

    def drip(self, send_body: bool) -> None:
        """Promise DRIP_LENGTH bytes of JPEG, then send one a second until the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(DRIP_LENGTH))
        self.end_headers()
        if not send_body:
            return
        try:
            self.wfile.flush()
            for _ in range(DRIP_LENGTH):
                time.sleep(1)
                self.wfile.write(b"\xff")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away


def make_server(port: int, log: str | None = None, host: str = "127.0.0.1",
                robots: str = "none") -> ThreadingHTTPServer:
    """Bind `host`:`port` (0 = any free port) with one daemon thread per request."""
    Handler.huge_png, Handler.huge_hdr, Handler.huge_tiff = bomb_png(), bomb_hdr(), bomb_tiff()
    Handler.log, Handler.robots = log, robots
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve forever after printing `PORT <n>`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", help="append each request's path to this file")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address to bind")
    parser.add_argument("--robots", default="none", choices=["none", "private", "delay", "stall", "error"])
    args = parser.parse_args(argv)
    server = make_server(args.port, args.log, args.host, args.robots)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


class TestWeb:
    """Starts the server subprocess, reads its port; .stop() kills it by pid (SIGKILL after SIGTERM timeout) and waits."""

    __test__ = False  # not a pytest test class
    start_timeout = 20.0
    stop_timeout = 5.0

    def __init__(self, host: str = "127.0.0.1", robots: str = "none") -> None:
        """`robots`: the server's `--robots` mode."""
        self.log = tempfile.NamedTemporaryFile(prefix="testweb-", suffix=".log", delete=False).name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.testweb", "--port", "0", "--log", self.log, "--host", host,
             "--robots", robots],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        self.pid: int = self.proc.pid
        try:
            self.port = self.read_port()
        except BaseException:
            self.stop()
            raise
        self.base_url: str = f"http://{host}:{self.port}"

    def read_port(self) -> int:
        """Wait for the `PORT <n>` line on the child's stdout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"test web server did not report its port within {self.start_timeout} s")
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError("test web server exited before reporting its port")
            line += chunk
        match = re.fullmatch(rb"PORT (\d+)\n", line)
        if match is None:
            raise RuntimeError(f"unexpected line from test web server: {line!r}")
        return int(match.group(1))

    def url(self, path: str) -> str:
        """Absolute URL of `path` (which starts with '/')."""
        return self.base_url + path

    def requests(self) -> list[str]:
        """The paths requested so far, in order."""
        with open(self.log, encoding="utf-8") as f:
            return f.read().splitlines()

    def stop(self) -> None:
        """SIGTERM the server by pid, SIGKILL it if it lingers, and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if os.path.exists(self.log):
            os.unlink(self.log)

    def __enter__(self) -> TestWeb:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
