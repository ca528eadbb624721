"""wit.crawl.resolve's url resolution: exactly urljoin's result on every kind of link
(a link urljoin refuses is returned as it is)."""

from __future__ import annotations

import random
from urllib.parse import urljoin

import pytest

import wit.crawl.resolve as resolve
from wit.crawl.resolve import Resolver

PIECES = ["a", "b", "x.jpg", "/", "//", ".", "..", "./", "../", "http://", "https://", "h.com", ":", "@", "%20",
          "?q", "#f", ";p", " ", "\t", "~", "-", "_", "img", "é", "HTTP://", "Https:", "mailto:", "data:", "[", "]",
          "\\", "=", "&", "80", "...", "\n", "?", "#", ";", "?#", "ｈ", "\x00", "\x7f", "+", "a.b-c+d:", "1a:",
          "//[::1]", "ℂ", "%2e", ".%2e/", "\r"]
# how links start on real pages, for the fuzz to reach every fast path
STARTS = ["", "", "/", "//", "./", "../", "../../", "http://", "https://", "HTTP://", "hTTps://", "//cdn.example",
          "https://cdn.example", "http://o.example:8080", "data:", "javascript:", "?", "#", " ", "\t"]
BASES = ["http://site.example/wiki/Page", "https://s.example/", "http://s.example", "http://s.example/a/b/",
         "https://s.example/a/./b/../c", "http://s.example/a//b/c", "http://u@s.example:8080/x?y#z",
         "https://s.example/a;p?q", "ftp://x/y", "http://s.example/é/x", "http://s.example/a/b/.",
         "http://s.example/../a/b", "HTTP://S.example/A/", "http:///x", "http:x/y", "https://s.example/a/..",
         "http://[::1]/a/b", "http://h/a;b/c;d", "https://s.example/a/b?#", " http://s.example/a/",
         "http://s.example/.././a/b/../../c/", "https://ｈ.example/a/", "http://s.example/a\tb/c", "data:x"]
# Link forms written out, each against every base: what real pages carry and what could trip a
# shortcut (dot segments, empty parts, schemes in other cases, hosts urlsplit checks).
FORMS = [
    "", "img/a.jpg", "a/b/c.png", "c.jpg?w=640&h=480", "c.jpg#frag", "c.jpg?w=1#f", "./c.jpg", "../img/b.png",
    "../../x.jpg", "../../../../x.jpg", ".", "..", "./", "../", "./.", "a/./b.jpg", "a/../b.jpg", "a/b/..",
    "a//b.jpg", "a/b/", ".hidden.jpg", "a/.b.jpg", "...", ".../x", "/", "/img/a.jpg", "/img/a.jpg?x=1",
    "/a/../b.jpg", "/a/./b.jpg", "/../x.jpg", "/a//b.jpg", "/a/b/.", "/a;p", "/a;p?q", "/a;", "/a?", "/a#",
    "/a?#", "/a?#f", "/a?q#", "/a#f?q", "/a?q?r", "//cdn.example/a.jpg", "//cdn.example", "//cdn.example?x",
    "//cdn.example#x", "//", "///x", "//?x", "//#x", "//CDN.Example/A.JPG", "//cdn.example/a/../b.jpg",
    "//cdn.example/a;p?", "//[::1]/a.jpg", "//[::1/a.jpg", "//ｈ.example/a.jpg", "//℀.example/a.jpg",
    "http://cdn.example/a.jpg", "https://cdn.example/a.jpg", "https://cdn.example/a.jpg?w=640&h=480",
    "https://cdn.example/a.jpg#main", "https://cdn.example/a/../b.jpg", "https://cdn.example", "https://cdn.example?x",
    "HTTPS://CDN.EXAMPLE/A.JPG", "Http://cdn.example/a.jpg", "HTTP://cdn.example/x?", "http:a.jpg", "https:a.jpg",
    "http:/a.jpg", "http:///a.jpg", "http://", "https://[::1]/a.jpg", "https://[::1/a.jpg", "http://u:p@h.example/a",
    "http://h.example:80/a", "http://h.example:x/a", "https://ｈ.example/a.jpg", "http://h.example/é.jpg",
    "http://h.example/caf%C3%A9%20x.jpg", "data:image/gif;base64,R0lGOD==", "data:,x", "javascript:void(0)",
    "mailto:a@b.example", "ftp://f.example/a.jpg", "tel:+1", "about:blank", "a:b", "a1+.-:x", "1a:b", "-a:b",
    "img/a:b.jpg", "img:/a.jpg", "?q", "?", "#f", "#", ";p", ";", "?q#f", " img/a.jpg", "img/a.jpg ", "\timg/a.jpg",
    "img/\na.jpg", "img/a\r.jpg", "\x00img.jpg", "img\x7f.jpg", "\\img\\a.jpg", "img/é.jpg", "ℂ/a.jpg",
    "img/[a].jpg", "a%2e%2e/b.jpg", "%2e%2e/b.jpg", "a b.jpg", "a\u00a0b.jpg", "\u00a0a.jpg",
]


def _urljoin(base: str, url: str) -> str:
    try:
        return urljoin(base, url)
    except ValueError:   # urljoin refuses it (a bad IPv6 host, ...): the resolver returns it as it is
        return url


@pytest.mark.parametrize("base", BASES)
def test_every_written_out_form_gives_urljoins_result(base):
    resolve_link = Resolver(base)
    assert [resolve_link(url) for url in FORMS] == [_urljoin(base, url) for url in FORMS]


@pytest.mark.parametrize("starts, pieces, bases, most_slow", [
    (STARTS, PIECES, BASES, 0.6),   # anything: every shortcut must agree with urljoin
    (["", "/", "//cdn.example/", "./", "../", "https://cdn.example/", "http://o.example/"],   # links of real
     ["a", "img", "x.jpg", "/", "?q=1", "&w=2", "#f", "-", "_", "%20", "~", ".png", "/../"],  # pages: seldom urljoin
     [b for b in BASES if b.startswith(("http://s", "https://s"))], 0.05),
])
def test_random_links_give_urljoins_result(monkeypatch, starts, pieces, bases, most_slow):
    """Links put together from pieces after the start of a link."""
    slow = []
    monkeypatch.setattr(resolve, "urljoin", lambda base, url: slow.append(url) or urljoin(base, url))
    rng = random.Random(7)
    for _ in range(50_000):
        base = rng.choice(bases)
        url = rng.choice(starts) + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        assert Resolver(base)(url) == _urljoin(base, url), (base, url)
    assert len(slow) < most_slow * 50_000


def test_common_links():
    resolve_link = Resolver("http://site.example/wiki/Page")
    assert [resolve_link(u) for u in ("img/a.jpg", "/static/b.png", "https://cdn.example/c.jpg", "http://o.example/d",
                                      "../e.jpg", "f.jpg?x=1", "//cdn.example/g.jpg", "", "http://[x/y.jpg")] == [
        "http://site.example/wiki/img/a.jpg", "http://site.example/static/b.png", "https://cdn.example/c.jpg",
        "http://o.example/d", "http://site.example/e.jpg", "http://site.example/wiki/f.jpg?x=1",
        "http://cdn.example/g.jpg", "http://site.example/wiki/Page", "http://[x/y.jpg"]
