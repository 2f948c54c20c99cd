"""Bogon and special-purpose address checks.

Two questions, two answers:

* :func:`is_bogon` follows OONI's list (``probe-cli:internal/netxlite/bogon.go``), so a DNS
  answer we call bogon is one OONI would call bogon. Addresses that embed an IPv4 address
  (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4, Teredo) are judged by that IPv4 address.
* :func:`is_special_purpose` is wider (every IANA special-purpose range we know of, multicast,
  reserved, unspecified) and fails closed: it is for a server that must never be tricked into
  connecting to a private address (SSRF), where a false alarm costs little.

:func:`parse_ip_loose` reads the IPv4 spellings ``inet_aton`` accepts (``2130706433``,
``0177.0.0.1``, ``0x7f.1``, ``127.1``), which an SSRF guard must see through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# netxlite/bogon.go (IPv4).
BOGONS_V4: tuple[IPNetwork, ...] = _nets(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
)

# netxlite/bogon.go (IPv6), without the 6to4/Teredo entries: those are judged by the
# embedded IPv4 address, which covers every one of OONI's explicit 6to4/Teredo bogons.
BOGONS_V6: tuple[IPNetwork, ...] = _nets(
    "::/128", "::1/128", "::/96", "100::/64", "2001:10::/28", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

# IANA special-purpose registries beyond the bogons (used only by is_special_purpose).
SPECIAL_V4: tuple[IPNetwork, ...] = _nets("192.31.196.0/24", "192.52.193.0/24",
                                          "192.88.99.0/24", "192.175.48.0/24")
SPECIAL_V6: tuple[IPNetwork, ...] = _nets(
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2620:4f:8000::/48",
    "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo server)."""
    if ip in _MAPPED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIXTOFOUR:
        return ip.sixtofour
    if ip in _TEREDO:
        teredo = ip.teredo
        return teredo[0] if teredo is not None else None  # server field, as OONI's list
    return None


def to_address(ip: str | IPAddress) -> IPAddress | None:
    """An address object from text (brackets and zone index allowed), or None."""
    if not isinstance(ip, str):
        return ip
    return _parse_address(ip) if len(ip) <= 64 else None


@lru_cache(maxsize=8192)
def _parse_address(ip: str) -> IPAddress | None:
    """Cached: analysis parses the same few addresses many times per record."""
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _in_any(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)


def _is_bogon_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return _in_any(ip, BOGONS_V4)
    inner = embedded_ipv4(ip)
    if inner is not None:
        return _in_any(inner, BOGONS_V4)
    return _in_any(ip, BOGONS_V6)


def is_bogon(ip: str | IPAddress, *, not_bogon: Sequence[IPNetwork] = ()) -> bool:
    """True for OONI bogons; non-addresses are bogons too (as netxlite.IsBogon).

    ``not_bogon`` lists networks to treat as public (a test network in 198.18.0.0/15, say).
    """
    address = to_address(ip)
    if address is None:
        return True
    if _in_any(address, not_bogon):
        return False
    return _is_bogon_address(address)


def is_loopback(ip: str | IPAddress) -> bool:
    """True for loopback addresses (also IPv4-mapped ones); non-addresses count as loopback."""
    address = to_address(ip)
    if address is None:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address in _MAPPED:
        address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.is_loopback


@dataclass(frozen=True, slots=True)
class SpecialRanges:
    """Addresses a server-side fetcher must not reach, minus an explicit allow-list."""

    allow: tuple[IPNetwork, ...] = ()

    def contains(self, ip: str | IPAddress) -> bool:
        """True if ``ip`` is special-purpose; text is read loosely, unparsable text is special."""
        address = parse_ip_loose(ip) if isinstance(ip, str) else ip
        if address is None:
            return True
        if _in_any(address, self.allow):
            return False
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None and _special_v4(inner):
                return True
            return _special_v6(address)
        return _special_v4(address)


def _special_common(ip: IPAddress) -> bool:
    return (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
            or ip.is_link_local or ip.is_private)


def _special_v4(ip: ipaddress.IPv4Address) -> bool:
    return _special_common(ip) or _in_any(ip, BOGONS_V4) or _in_any(ip, SPECIAL_V4)


def _special_v6(ip: ipaddress.IPv6Address) -> bool:
    return (_special_common(ip) or ip.is_site_local or _in_any(ip, BOGONS_V6)
            or _in_any(ip, SPECIAL_V6))


_DEFAULT_RANGES = SpecialRanges()

_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]{1,8}")
_OCT_PART = re.compile(r"0[0-7]{0,11}")
_DEC_PART = re.compile(r"[1-9][0-9]{0,9}")


def is_special_purpose(ip: str | IPAddress) -> bool:
    """Bogons plus multicast, reserved, unspecified and other IANA special-purpose space."""
    return _DEFAULT_RANGES.contains(ip)


def _parse_aton_part(part: str) -> int | None:
    """One dotted part: 0x-prefixed hex, 0-prefixed octal or decimal, as inet_aton reads it."""
    if _HEX_PART.fullmatch(part):
        return int(part[2:], 16)
    if _OCT_PART.fullmatch(part):
        return int(part, 8)
    if _DEC_PART.fullmatch(part):
        return int(part, 10)
    return None


def _aton_value(parts: list[int]) -> int | None:
    """Combine inet_aton parts: the last part fills all the remaining bytes."""
    head, last = parts[:-1], parts[-1]
    if any(value > 0xFF for value in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = 0
    for byte in head:
        value = (value << 8) | byte
    return (value << (8 * (4 - len(head)))) | last


def _parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    pieces = text.split(".")
    if not 1 <= len(pieces) <= 4 or not all(piece.isascii() for piece in pieces):
        return None
    parts = [_parse_aton_part(piece) for piece in pieces]
    if any(part is None for part in parts):
        return None
    value = _aton_value([part for part in parts if part is not None])
    return None if value is None else ipaddress.IPv4Address(value)


def parse_ip_loose(text: str) -> IPAddress | None:
    """Parse an address as inet_aton would (decimal, octal, hex, short forms) or as IPv6."""
    if not isinstance(text, str) or not text or len(text) > 64:
        return None
    if ":" in text:
        return to_address(text)
    return _parse_ipv4_loose(text)
