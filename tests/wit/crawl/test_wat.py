"""wit.crawl.wat's url resolution: exactly urljoin's result on every kind of link."""

from __future__ import annotations

import random
from urllib.parse import urljoin

from wit.crawl.wat import Resolver

PIECES = ["a", "b", "x.jpg", "/", "//", ".", "..", "./", "../", "http://", "https://", "h.com", ":", "@", "%20",
          "?q", "#f", ";p", " ", "\t", "~", "-", "_", "img", "é", "HTTP://", "mailto:", "data:", "[", "]", "\\",
          "=", "&", "80", "...", "\n"]
BASES = ["http://site.example/wiki/Page", "https://s.example/", "http://s.example", "http://s.example/a/b/",
         "https://s.example/a/./b/../c", "http://s.example/a//b/c", "http://u@s.example:8080/x?y#z",
         "https://s.example/a;p?q", "ftp://x/y", "http://s.example/é/x", "http://s.example/a/b/."]


def test_the_fast_paths_give_urljoins_result():
    rng = random.Random(7)
    compared = 0
    for _ in range(100_000):
        base = rng.choice(BASES)
        url = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))
        try:
            expected = urljoin(base, url)
        except ValueError:   # urljoin refuses it (an invalid IPv6 host): so does the resolver
            continue
        assert Resolver(base)(url) == expected, (base, url)
        compared += 1
    assert compared > 90_000


def test_common_links():
    resolve = Resolver("http://site.example/wiki/Page")
    assert [resolve(u) for u in ("img/a.jpg", "/static/b.png", "https://cdn.example/c.jpg", "http://o.example/d",
                                 "../e.jpg", "f.jpg?x=1", "//cdn.example/g.jpg", "")] == [
        "http://site.example/wiki/img/a.jpg", "http://site.example/static/b.png", "https://cdn.example/c.jpg",
        "http://o.example/d", "http://site.example/e.jpg", "http://site.example/wiki/f.jpg?x=1",
        "http://cdn.example/g.jpg", "http://site.example/wiki/Page"]
