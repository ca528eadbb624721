"""Which image urls the crawler may fetch.

Only http and https, no credentials, and no literal private, loopback, link-local,
multicast, reserved or unspecified address, nor a `localhost`-style name, unless
private hosts are explicitly allowed. IPv4 written the ways `inet_aton` accepts
(`2130706433`, `0x7f.1`, `127.1`) counts as a literal address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
# The common case, decided without parsing: a lower-case http(s) scheme, no credentials
# or port, and a DNS name whose last label starts with a letter (so it is no IPv4
# literal in any inet_aton form, and brackets exclude IPv6).
_PLAIN_URL = re.compile(r"https?://((?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)\.?(?=[/?#]|$)")
REFUSAL_REASONS = (
    "malformed", "scheme", "credentials", "local_name",
    "loopback", "private", "link_local", "multicast", "reserved",
)


def refusal(url: str, allow_private_hosts: bool = False) -> str | None:
    """Why `url` must not be fetched (one of REFUSAL_REASONS), or None if it may be."""
    plain = _PLAIN_URL.match(url)
    if plain:
        return None if allow_private_hosts or not _local_name(plain.group(1).lower()) else "local_name"
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
    if allow_private_hosts:
        return None
    host = host.rstrip(".").lower()
    if _local_name(host):
        return "local_name"
    address = _literal_address(host)
    return _address_class(address) if address is not None else None


def _local_name(host: str) -> bool:
    return host in LOCAL_NAMES or host.endswith(".localhost")


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host) or not host[0].isdigit():
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _address_class(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
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
