"""Which image urls the crawler may fetch, decided on the host as the HTTP client uses it.

Only http and https, no credentials. The host is read the way urllib and the socket layer
read it: percent-decoded, then IDNA-encoded. A host that either step would change in
meaning is `malformed` and never fetched: any `%` (`127.0.0.%31`, a zone id), a Unicode
label that maps to ASCII (full-width `１２７`), a non-ASCII dot (`127。0。0。1`); an
internationalised name (`bücher.de`) is fine. A literal address (IPv4 in every form
`inet_aton` accepts, IPv6, IPv4-mapped IPv6) or a `localhost`-style name is refused when it
is loopback, private, link-local, multicast, reserved or unspecified, unless a network the
user allows (`NetworkPolicy`) contains it. A DNS name is decided where it is connected to:
`wit.crawl.image_fetch` checks every address it resolves to against the same policy.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.errors import WitError

ALLOWED_SCHEMES = ("http", "https")
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
# what --allow-private-hosts allows: loopback and the RFC 1918 ranges, never link-local
PRIVATE_HOSTS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_IDNA_DOTS = ("\u3002", "\uff0e", "\uff61")
# The common case, decided without parsing: a lower-case http(s) scheme, no credentials
# or port, and an ASCII DNS name whose last label starts with a letter (so it is no IPv4
# literal in any inet_aton form, and brackets exclude IPv6).
_PLAIN_URL = re.compile(r"https?://((?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)\.?(?=[/?#]|$)")
# For `refusals`, in Arrow's RE2 syntax: `_PLAIN_URL` with a scheme of any case (urlsplit
# lower-cases it), which `refusal` allows unless the host is a local name; a scheme then no
# host (nothing for urlsplit to check or refuse: no `//`, and no tab or line break that it
# would delete first), refused for its scheme unless it is http(s).
_PLAIN_ANY_CASE = r"^(?i:https?)://(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*\.?(?:[/?#]|$)"
_HOSTLESS = r"^[A-Za-z][A-Za-z0-9+.-]*:(?:/?[^/\t\n\r][^\t\n\r]*|/?)$"
_HTTP_SCHEME = r"^(?i:https?):"
REFUSAL_REASONS = (
    "malformed", "scheme", "credentials", "local_name",
    "loopback", "private", "link_local", "multicast", "reserved",
)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class NetworkPolicy:
    """The networks the user allows besides the public internet."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def of(cls, cidrs: tuple[str, ...] | list[str], private_hosts: bool = False) -> "NetworkPolicy":
        """From CIDRs (`--allow-network`), plus PRIVATE_HOSTS with `private_hosts`."""
        networks = []
        for cidr in (*cidrs, *(PRIVATE_HOSTS if private_hosts else ())):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise WitError(f"--allow-network: {cidr!r} is not a network (e.g. 127.0.0.0/8)") from None
        return cls(tuple(dict.fromkeys(networks)))

    def address_refusal(self, address: Address) -> str | None:
        """Why connecting to `address` is refused (a REFUSAL_REASONS class), or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address.version == n.version and address in n for n in self.allowed):
            return None
        return _address_class(address)

    @property
    def allows_loopback(self) -> bool:
        return self.address_refusal(ipaddress.ip_address("127.0.0.1")) is None


def canonical_host(host: str) -> str | None:
    """The host as the HTTP client connects to it (lower case, IDNA, no trailing dot), or
    None when decoding would change it (see the module docstring)."""
    if "%" in host or any(dot in host for dot in _IDNA_DOTS):
        return None
    host = host.rstrip(".").lower()
    if not host.isascii():
        labels = []
        for label in host.split("."):
            try:
                encoded = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None
            if not label.isascii() and not encoded.startswith("xn--"):
                return None   # a Unicode label that is an ASCII one in disguise
            labels.append(encoded)
        host = ".".join(labels)
    return host or None


def refusal(url: str, policy: NetworkPolicy = NetworkPolicy()) -> str | None:
    """Why `url` must not be fetched (one of REFUSAL_REASONS), or None if it may be (a DNS
    name is checked again on every address it resolves to, at connect time)."""
    plain = _PLAIN_URL.match(url)
    if plain:
        return "local_name" if _local_name(plain.group(1).lower()) and not policy.allows_loopback else None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # raises ValueError on a bad port
    except (ValueError, AttributeError):
        return "malformed"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return "scheme"
    if not host:
        return "malformed"
    if parts.username is not None or parts.password is not None:
        return "credentials"
    host = canonical_host(host)
    if host is None:
        return "malformed"
    if _local_name(host):
        return None if policy.allows_loopback else "local_name"
    address = literal_address(host)
    return policy.address_refusal(address) if address is not None else None


def refusals(urls: pa.Array | pa.ChunkedArray, policy: NetworkPolicy = NetworkPolicy()) -> tuple[pa.Array, Counter]:
    """`refusal` of every url of an Arrow column: (which may be fetched, as a boolean
    array; the refusals counted by reason). Two common kinds are decided in Arrow, with
    the same answer: an http(s) url of any case whose host is a DNS name as `_PLAIN_URL`
    reads it and cannot be a local name (allowed), and a url of another scheme without a
    host (`data:`, `javascript:`: refused for its scheme); the others go through `refusal`."""
    urls = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
    plain = pc.and_not(pc.match_substring_regex(urls, _PLAIN_ANY_CASE),
                       pc.match_substring_regex(urls, "localhost|ip6-", ignore_case=True))
    scheme = pc.and_not(pc.match_substring_regex(urls, _HOSTLESS), pc.match_substring_regex(urls, _HTTP_SCHEME))
    decided = pc.fill_null(pc.or_(plain, scheme), False)
    others = pc.indices_nonzero(pc.invert(decided)).to_numpy()
    reasons = Counter({"scheme": pc.sum(scheme).as_py() or 0})
    allowed = pc.fill_null(plain, False).to_numpy(zero_copy_only=False).copy()
    for at, reason in zip(others, map(functools.partial(refusal, policy=policy), urls.take(others).to_pylist())):
        allowed[at] = reason is None
        reasons[reason] += 1
    del reasons[None]
    return pa.array(allowed, pa.bool_()), +reasons


def _local_name(host: str) -> bool:
    return host in LOCAL_NAMES or host.endswith(".localhost")


def literal_address(host: str) -> Address | None:
    """The address a host names literally (any inet_aton IPv4 form, IPv6), or None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host) or not host[0].isdigit():
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None


def _address_class(address: Address) -> str | None:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved or address.is_unspecified:
        return "reserved"
    if address.is_private:
        return "private"
    return None if address.is_global else "reserved"  # e.g. 100.64.0.0/10, shared address space
