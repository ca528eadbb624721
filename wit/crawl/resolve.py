"""`urljoin(base, url)` for the many links of one page: the same string, several times faster.

urljoin parses the base and the link every time, which is most of what reading a WAT file
costs when done naively. `Resolver` parses a page's base once (an http(s) base with a host;
with any other base every link goes through urljoin), then resolves a link in one of three
ways, each giving urljoin's result:
1. the links most pages are made of (printable ASCII, first character not a space, no `;`,
   no bracket, no empty `?` or `#` part) in one of these forms, put together directly: an
   http(s) url with a host (itself), `//host/x` (the page's scheme before it), `/x` (the
   page's scheme and host), and `x`, `./x`, `../x` without other dot or empty segments
   (the page's directory, or its parent, as urljoin resolves them);
2. the other links whose first character is above the space, without tab, CR or LF (which
   urlsplit strips or deletes first), whose host if any is non-empty ASCII without brackets
   (which urlsplit checks): the steps of urljoin's own code (CPython 3.11's `urljoin`,
   `urlsplit`, `urlunsplit`) on the parsed base: a url of another scheme (`data:`,
   `javascript:`, `https:` on an http page) is itself; a url of the page's scheme in any
   case, or a scheme-relative one, is the lower-case scheme, the host and the rest with
   empty `;`, `?` and `#` parts dropped; a path is joined with dot segments resolved and,
   for a relative path, empty segments dropped;
3. anything else (`?q`, `#f`, `http:x`, a space or control first, a bracketed or non-ASCII
   host, an empty link): urljoin itself.
A link urljoin refuses (`ValueError`: `http://[x`) is returned as it is, for the url policy
to refuse as malformed and count, instead of costing its page. The tests compare all three
with urljoin on written-out and random links.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")   # urlsplit's scheme: a letter, then scheme_chars
_FAST_SCHEMES = ("http", "https")


class Resolver:
    """Resolves the links of one page against its base (`urljoin(base, url)`, exactly)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.scheme = ""   # empty: every link goes through urljoin
        parsed = _parsed(base)
        if parsed is None:
            return
        scheme, host, path = parsed
        if scheme in _FAST_SCHEMES and host:
            self.scheme, self.origin = scheme, f"{scheme}://{host}"
            self.segments = path.split("/")   # starts with "" (the path is empty or rooted)
            if self.segments[-1]:
                del self.segments[-1]   # the last segment is not a directory
            # where `x` and `../x` lead: the page's directory as urljoin resolves it (empty
            # segments dropped, dot segments applied), and that directory's parent
            stack = _stack([""] + [part for part in self.segments[1:] if part])
            self.same, self.other = f"{scheme}://", "https://" if scheme == "http" else "http://"
            self.directory = self.origin + _rooted("/".join([*stack, ""]))
            self.parent = self.origin + _rooted("/".join([*stack[:-1], ""]))

    def __call__(self, url: str) -> str:
        # 1. the common forms, when nothing needs rebuilding or checking
        if (self.scheme and url.isascii() and url.isprintable() and url[:1] > " " and url[-1] not in "?#"
                and ";" not in url and "?#" not in url and "[" not in url and "]" not in url):
            if url[0] == "/":
                if url[1:2] != "/":
                    if "/." not in url:   # /x
                        return self.origin + url
                elif url[2:3] not in "/?#":   # //host/x
                    return f"{self.scheme}:{url}"
            elif url.startswith(self.same):
                if url[len(self.same):len(self.same) + 1] not in "/?#":   # with a host
                    return url
            elif url.startswith(self.other):   # another scheme
                return url
            elif url[0] not in "?#" and ":" not in url and "//" not in url:   # x, ./x, ../x
                if url[0] != ".":
                    directory, path = self.directory, url
                elif url[:2] == "./":
                    directory, path = self.directory, url[2:]
                elif url[:3] == "../":
                    directory, path = self.parent, url[3:]
                else:
                    directory, path = None, ""
                if path and path[0] not in ".?#" and "/." not in path:
                    return directory + path
        return self._resolve(url)

    def _resolve(self, url: str) -> str:
        """2. urljoin's steps on the parsed base, or 3. urljoin."""
        scheme = self.scheme
        if not scheme or not url or url[0] <= " " or "\t" in url or "\n" in url or "\r" in url:
            return self._urljoin(url)
        rest = url
        colon = url.find(":")
        if colon > 0 and _SCHEME.fullmatch(url, 0, colon):
            named = url[:colon].lower()
            rest = url[colon + 1:]
            if named != scheme:   # urljoin returns it as it is (once urlsplit has accepted its host)
                return url if rest[:2] != "//" or _plain_host(rest) is not None else self._urljoin(url)
            if rest[:2] != "//":  # `http:x`, a path without a host
                return self._urljoin(url)
        if rest[:2] == "//":
            host = _plain_host(rest)
            if not host:
                return self._urljoin(url)
            path, tail = _split(rest[2 + len(host):])
            return f"{scheme}://{host}{path}{tail}"
        path, tail = _split(rest)
        if not path:
            return self._urljoin(url)
        if path[0] == "/":
            if "/." in path:
                path = _resolved(path.split("/"), False)
            return self.origin + path + tail
        return self.origin + _resolved(self.segments + path.split("/"), True) + tail

    def _urljoin(self, url: str) -> str:
        try:
            return urljoin(self.base, url)
        except ValueError:
            return url


def _parsed(base: str) -> tuple[str, str, str] | None:
    """(scheme, host, path) of `base` as urlparse gives them, or None where it refuses it."""
    if (base[:1] > " " and "\t" not in base and "\n" not in base and "\r" not in base
            and base.startswith(("http://", "https://"))):
        scheme, rest = base.split(":", 1)
        host = _plain_host(rest)
        if host is not None:
            return scheme, host, _split(rest[2 + len(host):])[0]
    try:
        scheme, host, path, _, _, _ = urlparse(base)
    except ValueError:
        return None
    return scheme, host, path


def _plain_host(rest: str) -> str | None:
    """The host of `//host...` (up to the first `/`, `?` or `#`), or None where urlsplit
    would check it further (non-ASCII, brackets)."""
    end = len(rest)
    for delimiter in "/?#":
        at = rest.find(delimiter, 2)
        if 0 <= at < end:
            end = at
    host = rest[2:end]
    return host if host.isascii() and "[" not in host and "]" not in host else None


def _split(rest: str) -> tuple[str, str]:
    """(path, the rest rebuilt): `rest` cut as urlparse cuts it (fragment, then query, then
    params of the last segment) and put back as urlunparse does, empty parts dropped."""
    fragment = query = params = ""
    if "#" in rest:
        rest, fragment = rest.split("#", 1)
    if "?" in rest:
        rest, query = rest.split("?", 1)
    if ";" in rest:
        slash = rest.rfind("/")
        at = rest.find(";", slash if slash >= 0 else 0)
        if at >= 0:
            rest, params = rest[:at], rest[at + 1:]
    tail = f";{params}" if params else ""
    if query:
        tail += "?" + query
    if fragment:
        tail += "#" + fragment
    return rest, tail


def _resolved(segments: list[str], relative: bool) -> str:
    """urljoin's path resolution: empty segments dropped between the first and the last of
    a relative path, `.` and `..` applied, the result rooted (as urlunsplit roots it)."""
    if relative:
        segments[1:-1] = filter(None, segments[1:-1])
    resolved = _stack(segments)
    if segments[-1] in (".", ".."):
        resolved.append("")
    return _rooted("/".join(resolved) or "/")


def _stack(segments: list[str]) -> list[str]:
    resolved: list[str] = []
    for segment in segments:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    return resolved


def _rooted(path: str) -> str:
    return path if path[:1] == "/" else "/" + path
