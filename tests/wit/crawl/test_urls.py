import random
import re

import pytest

from tests.support.crawls import DISGUISED
from wit.crawl import urls
from wit.crawl.urls import NetworkPolicy, refusal
from wit.formats.errors import WitError

PRIVATE_HOSTS = NetworkPolicy.of((), private_hosts=True)


@pytest.mark.parametrize("url, reason", [
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
])
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
