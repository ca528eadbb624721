import random
import re
from collections import Counter

import pyarrow as pa
import pytest

from tests.support.crawls import DISGUISED
from wit.crawl import urls
from wit.crawl.urls import NetworkPolicy, refusal
from wit.formats.errors import WitError

PRIVATE_HOSTS = NetworkPolicy.of((), private_hosts=True)


POLICY_CASES = [
    ("http://example.com/a.jpg", None),
    ("https://images.example.org:8443/x.png?s=1", None),
    ("http://8.8.8.8/a.jpg", None),
    ("http://[2001:4860:4860::8888]/a.jpg", None),
    ("ftp://example.com/a.jpg", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("data:image/png;base64,AAAA", "scheme"),
    ("//example.com/a.jpg", "scheme"),
    ("http://user:secret@example.com/a.jpg", "credentials"),
    ("http://user@example.com/a.jpg", "credentials"),
    ("http://[::1/a.jpg", "malformed"),
    ("http://example.com:99999/a.jpg", "malformed"),
    ("http:///a.jpg", "malformed"),
    ("http://localhost/a.jpg", "local_name"),
    ("http://LOCALHOST./a.jpg", "local_name"),
    ("http://img.localhost/a.jpg", "local_name"),
    ("http://127.0.0.1:8000/a.jpg", "loopback"),
    ("http://127.1/a.jpg", "loopback"),
    ("http://2130706433/a.jpg", "loopback"),
    ("http://0x7f000001/a.jpg", "loopback"),
    ("http://[::1]/a.jpg", "loopback"),
    ("http://[::ffff:127.0.0.1]/a.jpg", "loopback"),
    ("http://10.1.2.3/a.jpg", "private"),
    ("http://172.16.0.1/a.jpg", "private"),
    ("http://192.168.0.10/a.jpg", "private"),
    ("http://[fc00::1]/a.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data", "link_local"),
    ("http://[fe80::1]/a.jpg", "link_local"),
    ("http://224.0.0.251/a.jpg", "multicast"),
    ("http://0.0.0.0/a.jpg", "reserved"),
    ("http://240.0.0.1/a.jpg", "reserved"),
    ("http://100.64.1.1/a.jpg", "reserved"),
    ("http://bücher.example/a.jpg", None),                 # an internationalised name, as IDNA
]


@pytest.mark.parametrize("url, reason", POLICY_CASES)
def test_policy(url, reason):
    assert refusal(url) == reason


# hosts that the HTTP client would decode into another host than the one checked
@pytest.mark.parametrize("url", DISGUISED)
def test_a_host_the_client_would_decode_otherwise_is_malformed_whatever_is_allowed(url):
    for policy in (NetworkPolicy(), PRIVATE_HOSTS, NetworkPolicy.of(["0.0.0.0/0", "::/0"])):
        assert refusal(url, policy) == "malformed"


def test_networks_are_allowed_exactly_as_named():
    for url in ("http://127.0.0.1:8000/a.jpg", "http://localhost/x", "http://10.0.0.1/x", "http://[::1]/x"):
        assert refusal(url, PRIVATE_HOSTS) is None
    for url, reason in (("ftp://127.0.0.1/x", "scheme"), ("http://u:p@127.0.0.1/x", "credentials"),
                        ("http://169.254.169.254/", "link_local"), ("http://[fe80::1]/", "link_local"),
                        ("http://100.64.0.1/", "reserved"), ("http://[fc00::1]/", "private")):
        assert refusal(url, PRIVATE_HOSTS) == reason   # the alias never opens link-local or the metadata address
    only = NetworkPolicy.of(["127.0.0.0/8"])
    assert refusal("http://127.9.9.9/", only) is None and refusal("http://localhost/", only) is None
    assert refusal("http://10.0.0.1/", only) == "private" and refusal("http://[::1]/", only) == "loopback"
    assert refusal("http://169.254.169.254/", NetworkPolicy.of(["169.254.169.254/32"])) is None
    with pytest.raises(WitError, match="--allow-network: '10.0.0.0/33' is not a network"):
        NetworkPolicy.of(["10.0.0.0/33"])


def test_fast_path_agrees_with_full_parse(monkeypatch):
    """Plain urls are decided by a regular expression; it must agree with urlsplit."""
    rng = random.Random(0)
    parts = ["http://", "https://", "HTTP://", "ftp://", "http:/", "", "example", ".com", ".", "-",
             "localhost", "img.localhost", "127.0.0.1", "0x7f", ".1", "1", "[::1]", ":8080", ":99999",
             "user@", "/a.jpg", "?q=1", "#f", " ", "café", "_", "xn--caf-dma", "10", ".0xff"]
    cases = ["".join(rng.choice(parts) for _ in range(rng.randint(1, 6))) for _ in range(20000)]
    hosts = ["example", ".com", "localhost", "img.localhost", ".1", "0x7f", "10", "a-b", ".0xff", "."]
    cases += [rng.choice(["http://", "https://"]) + "".join(rng.choice(hosts) for _ in range(rng.randint(1, 3)))
              + rng.choice(["", "/a.jpg", "?q", "#x", ":80/", "/"]) for _ in range(10000)]
    cases = [(url, allow) for url in cases for allow in (NetworkPolicy(), PRIVATE_HOSTS)]
    fast = [refusal(url, allow) for url, allow in cases]
    assert sum(bool(urls._PLAIN_URL.match(url)) for url, _ in cases) > 5000  # the fast path is taken
    monkeypatch.setattr(urls, "_PLAIN_URL", re.compile(r"(?!)"))  # never matches: full parse only
    assert [refusal(url, allow) for url, allow in cases] == fast


def test_refusals_of_a_column_agree_with_refusal(monkeypatch):
    """`refusals` decides the common urls in Arrow: the same answers and counts as `refusal`
    url by url, on adversarial urls and on the kinds Arrow decides (any-case http(s) with a
    DNS name, a scheme without a host), under both policies."""
    rng = random.Random(1)
    starts = ["http://", "https://", "HTTPS://", "hTtP://", "data:", "javascript:", "ftp://", "mailto:", "a:", "a:/",
              "a://", "//", "", " http://", "http:", "x-y.z+w:", "1a:", "data:\t//", "data:/\n/"]
    parts = ["example", ".com", ".", "-", "localhost", "LocalHost", "ip6-localhost", "127.0.0.1", "0x7f", "[::1]",
             ":8080", "user@", "/a.jpg", "?q=1", "#f", " ", "\t", "\n", "café", "%31", "[", "/", "//", "xn--caf-dma"]
    cases = [rng.choice(starts) + "".join(rng.choice(parts) for _ in range(rng.randint(0, 5))) for _ in range(20000)]
    cases += [url for url, _ in POLICY_CASES] + list(DISGUISED)
    column = pa.array(cases, pa.string())
    slow = []
    monkeypatch.setattr(urls, "refusal", lambda url, policy: slow.append(url) or refusal(url, policy))
    for policy in (NetworkPolicy(), PRIVATE_HOSTS):
        allowed, counts = urls.refusals(column, policy)
        reasons = [refusal(url, policy) for url in cases]
        assert allowed.to_pylist() == [reason is None for reason in reasons]
        assert counts == Counter(reason for reason in reasons if reason)
    slow.clear()
    common = ["https://cdn.example/a.jpg?w=1#f", "HTTP://CDN.Example./b", "http://a-b.c.example", "data:image/gif;b,x",
              "javascript:void(0)", "mailto:a@b.example"]
    assert urls.refusals(pa.array(common))[1] == Counter(scheme=3) and not slow   # all decided in Arrow
