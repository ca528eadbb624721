"""img2dataset's single-image download, with a deadline, a redirect policy and a pixel cap.

img2dataset's `timeout` bounds each socket operation, so a server that drips one byte a
second holds a thread for as long as it likes. Here every socket a download opens (the
redirects' too) is shut down by a watchdog thread when the download's deadline passes, so one attempt
takes at most `timeout` plus a small margin, and `retries + 1` attempts at most
`timeout * (retries + 1)`. Every connection (the first request's and every redirect's)
resolves the name itself, checks each address against the network policy and connects to
a checked address (`guarded_connection`); redirects to urls the policy refuses are not
followed. A body is read up to `max_bytes` (a larger Content-Length is refused unread). An
image is refused before decoding when its header declares more than `max_pixels` pixels or
its format's size cannot be read from a header (`wit.formats.images`).

`WitDownloader` is img2dataset's `Downloader` with these settings: img2dataset pickles it
to each worker process (multiprocessing or Spark), where unpickling imports this module,
which puts `download_image` in place of img2dataset's. With `counters_dir` set, each shard
also writes `counters_dir/NNNNN.json` (how its robots.txt fetches went) just before
img2dataset's `NNNNN_stats.json`, so a shard that is done has both.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import io
import ipaddress
import itertools
import multiprocessing
import os
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from urllib.error import HTTPError
from urllib.parse import urljoin, urlsplit

import img2dataset.downloader as i2d_downloader
from wit.crawl.urls import NetworkPolicy, refusal
from wit.formats.atomic import write_json
from wit.formats.images import MAX_IMAGE_BYTES, MAX_PIXELS, ImageRefused, header_size

USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
DEADLINE_ERROR = "download took longer than the timeout"
ROBOTS_ERROR = "robots_disallowed: robots.txt disallows this url"


@dataclass(frozen=True)
class FetchPolicy:
    network: NetworkPolicy = NetworkPolicy()
    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_IMAGE_BYTES
    respect_robots: bool = False
    max_per_host: int = 0   # concurrent requests to one host from this process; 0: no limit
    counters_dir: str = ""  # where each shard writes its robots.txt counters (see the module docstring)


class Refused(OSError):
    """A connection the policy does not allow; `reason` says why (`resolved_loopback`, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_policy = FetchPolicy()
_current = threading.local()  # the _Download running in this thread


class _Download:
    """One download attempt: its deadline and the sockets it opened."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.sockets: list = []
        self.expired = self.finished = False
        self._lock = threading.Lock()

    def add(self, sock) -> None:
        with self._lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(2)  # wakes a blocked recv at once
    except OSError:
        pass


class _Watchdog:
    """One thread per process that expires downloads past their deadline (a thread per
    download would cost more than a local download itself)."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, _Download]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, download: _Download) -> None:
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wit-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (download.deadline, next(self._order), download))
            if self._heap[0][2] is download:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)[2].expire()


_watchdog = _Watchdog()


def guarded_connection(address: tuple[str, int], timeout: float | None = None,
                       source_address: tuple[str, int] | None = None) -> socket.socket:
    """`socket.create_connection`, deciding on the addresses the name resolves to: every
    one must be allowed by the policy, and the socket connects to one of those very
    addresses (no second resolution, so no DNS rebinding between check and connect)."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        reason = _policy.network.address_refusal(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]))
        if reason:
            raise Refused(f"resolved_{reason}")
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError(f"{host}: no address")


class _DeadlineMixin:
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._create_connection = guarded_connection   # http.client sets socket.create_connection

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        download = getattr(_current, "download", None)
        if download is not None:
            download.add(self.sock)  # type: ignore[attr-defined]


class _HTTPConnection(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


class _PolicyRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Every redirect target is judged by the url policy first, so a refused one has the
    policy's reason (`redirect_scheme` for file:, gopher: or ftp: alike), not urllib's
    message for the schemes it happens to reject itself."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target:
            reason = refusal(urljoin(req.full_url, target), _policy.network)
            if reason:
                raise Refused(f"redirect_{reason}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        reason = refusal(newurl, _policy.network)
        if reason:
            raise Refused(f"redirect_{reason}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _PolicyRedirectHandler)


class _Hosts:
    """Per process, for each origin (scheme://host:port): its robots.txt, fetched once
    (through the same guarded opener, bounded in time and size; one that fails or times
    out allows everything, the usual crawler rule) and shared by the threads, and the slots
    that bound concurrent requests to it. `robots` counts the fetches: `fetched`, `missing`
    (4xx: no rules) and `failed` (timeout, 5xx, connection, over the size bound), with a few
    examples of the failures."""

    MAX_ROBOTS_BYTES = 500 << 10
    EXAMPLES = 3

    def __init__(self) -> None:
        self.robots: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._robots: dict[str, object] = {}
        self._origin_locks: dict[str, threading.Lock] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def slot(self, origin: str, limit: int) -> threading.BoundedSemaphore | contextlib.nullcontext:
        if limit < 1:
            return contextlib.nullcontext()
        with self._lock:
            return self._slots.setdefault(origin, threading.BoundedSemaphore(limit))

    def allowed(self, url: str, origin: str, user_agent: str, token: str, timeout: float) -> bool:
        with self._lock:
            lock = self._origin_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin not in self._robots:
                self._robots[origin] = self._fetch(origin, user_agent, timeout)
        rules = self._robots[origin]
        return rules is None or rules.can_fetch(url, token or "*")

    def _fetch(self, origin: str, user_agent: str, timeout: float):
        from protego import Protego

        outer = getattr(_current, "download", None)
        _current.download = attempt = _Download(timeout)
        _watchdog.watch(attempt)
        try:
            request = urllib.request.Request(f"{origin}/robots.txt", headers={"User-Agent": user_agent})
            with _OPENER.open(request, timeout=timeout) as response:
                body = _read_bounded(response, self.MAX_ROBOTS_BYTES)
            if body is None or attempt.expired:
                raise OSError(DEADLINE_ERROR if attempt.expired else f"over {self.MAX_ROBOTS_BYTES:,} bytes")
            rules = Protego.parse(body.decode("utf-8", "replace"))
            self._count("fetched")
            return rules
        except HTTPError as e:   # no robots.txt (4xx) or a failing one (5xx): everything allowed
            self._count("missing" if e.code < 500 else "failed", f"{origin}/robots.txt: {e}")
        except Exception as e:  # noqa: BLE001 - none that can be read: everything allowed
            self._count("failed", f"{origin}/robots.txt: {DEADLINE_ERROR if attempt.expired else e}")
        finally:
            attempt.finished = True
            _current.download = outer
        return None

    def _count(self, outcome: str, example: str = "") -> None:
        with self._lock:
            self.robots[outcome] += 1
            if outcome == "failed" and len(self.failures) < self.EXAMPLES:
                self.failures.append(example)

    def start_shard(self) -> None:
        """Count from zero: a process downloads one shard at a time."""
        with self._lock:
            self.robots.clear()
            self.failures.clear()

    def counters(self) -> dict:
        with self._lock:
            return {"robots": dict(self.robots), "robots_failures": list(self.failures)}


_hosts = _Hosts()


def download_image(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset's `download_image` contract: (key, BytesIO or None, error or None)."""
    key, url = row
    user_agent = USER_AGENT
    if user_agent_token:
        user_agent += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    reason = refusal(url, _policy.network)
    if reason:
        return key, None, f"refused_url: {reason}"
    parts = urlsplit(url)
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    with _hosts.slot(origin, _policy.max_per_host):
        if _policy.respect_robots and not _hosts.allowed(url, origin, user_agent, user_agent_token, timeout):
            return key, None, ROBOTS_ERROR
        return _download(key, url, user_agent, timeout, user_agent_token, disallowed_header_directives)


def _download(key, url: str, user_agent: str, timeout: float, user_agent_token, disallowed_header_directives):
    _current.download = attempt = _Download(timeout)
    _watchdog.watch(attempt)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": user_agent})
        with _OPENER.open(request, timeout=timeout) as response:
            if disallowed_header_directives and i2d_downloader.is_disallowed(
                response.headers, user_agent_token, disallowed_header_directives
            ):
                return key, None, "Use of image disallowed by X-Robots-Tag directive"
            data = _read_bounded(response, _policy.max_bytes)
        if attempt.expired:
            return key, None, DEADLINE_ERROR
        refused = _refusal(data) if data is not None else f"too_large: over {_policy.max_bytes:,} bytes"
        return (key, None, refused) if refused else (key, io.BytesIO(data), None)
    except Exception as err:  # noqa: BLE001 - img2dataset records any failure as the sample's error
        # a socket that times out (after `timeout`, as the deadline) is the same event,
        # whichever of the two comes first
        if attempt.expired or isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError):
            return key, None, DEADLINE_ERROR
        refused = err if isinstance(err, Refused) else getattr(err, "reason", None)
        return key, None, f"refused_url: {refused.reason}" if isinstance(refused, Refused) else str(err)
    finally:
        attempt.finished = True
        _current.download = None


def _read_bounded(response, limit: int) -> bytes | None:
    """The body, or None when its Content-Length or its bytes go past `limit` (it is then
    not read any further)."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    while chunk := response.read(min(1 << 16, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def _refusal(data: bytes) -> str | None:
    """Why the downloaded bytes must not reach img2dataset's decoder (read from the header
    only: an unsupported format, an unreadable header, too many pixels), or None."""
    try:
        header_size(data, _policy.max_pixels)
    except ImageRefused as e:
        return f"image refused: {e.reason} ({e})"
    return None


class WitDownloader(i2d_downloader.Downloader):
    """img2dataset's Downloader that applies a FetchPolicy in the worker it runs in."""

    def __init__(self, *args, policy: FetchPolicy, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    def download_shard(self, row):
        global _policy
        _policy = self.policy
        _hosts.start_shard()
        return super().download_shard(row)


_write_stats = i2d_downloader.write_stats


def _write_counters_then_stats(output_folder, shard_id, *args, **kwargs):
    """img2dataset's `write_stats`, after this shard's robots.txt counters."""
    if _policy.counters_dir:
        write_json(os.path.join(_policy.counters_dir, f"{shard_id:05d}.json"), _hosts.counters())
    return _write_stats(output_folder, shard_id, *args, **kwargs)


i2d_downloader.download_image = download_image
i2d_downloader.write_stats = _write_counters_then_stats

if multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread():
    # an img2dataset worker: Ctrl-C reaches the whole process group, and the leader stops
    # its workers (wit.formats.processes), without a traceback from each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
