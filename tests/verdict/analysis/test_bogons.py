"""Bogon, special-purpose and loose IPv4 parsing."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzprobe.bogons import (
    BOGONS_V4,
    SpecialRanges,
    embedded_ipv4,
    is_bogon,
    is_loopback,
    is_special_purpose,
    parse_ip_loose,
)

LAB = (ipaddress.ip_network("198.18.0.0/15"),)
ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
ipv6s = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@pytest.mark.parametrize(("ip", "bogon"), [
    ("127.0.0.2", True), ("0.0.0.0", True), ("10.1.2.3", True), ("100.64.0.1", True),
    ("169.254.1.1", True), ("172.31.255.255", True), ("192.168.1.1", True),
    ("198.18.0.1", True), ("224.0.0.1", True), ("255.255.255.255", True), ("240.0.0.1", True),
    ("8.8.8.8", False), ("93.184.216.34", False), ("172.32.0.1", False),
    ("::1", True), ("::", True), ("fe80::1", True), ("fd00::1", True), ("ff02::1", True),
    ("2001:db8::1", True), ("2a00:1450::1", False),
    ("::ffff:127.0.0.1", True), ("::ffff:8.8.8.8", False),
    ("64:ff9b::10.0.0.1", True), ("64:ff9b::8.8.8.8", False),
    ("2002:7f00:1::1", True), ("2002:0808:0808::1", False),
    ("2001:0:7f00:1::1", True), ("2001:0:808:808::1", False),
    ("not an address", True), ("", True),
])
def test_is_bogon_follows_ooni_list(ip: str, bogon: bool) -> None:
    """OONI's bogons, with embedded IPv4 (mapped, NAT64, 6to4, Teredo) judged by the IPv4."""
    assert is_bogon(ip) is bogon


def test_not_bogon_exempts_networks() -> None:
    """A lab network listed in not_bogon stops counting as bogon; others are unaffected."""
    assert is_bogon("198.18.0.7") is True
    assert is_bogon("198.18.0.7", not_bogon=LAB) is False
    assert is_bogon("127.0.0.2", not_bogon=LAB) is True


def test_is_loopback() -> None:
    """Loopback in both families (and IPv4-mapped); garbage counts as loopback, as in OONI."""
    assert is_loopback("127.9.9.9") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("8.8.8.8") and is_loopback("nonsense")


@given(ipv4s)
def test_ipv4_bogon_matches_the_network_list(ip: ipaddress.IPv4Address) -> None:
    """For IPv4, is_bogon is exactly membership in the listed networks."""
    assert is_bogon(str(ip)) is any(ip in net for net in BOGONS_V4)


@given(ipv4s)
def test_mapped_and_6to4_agree_with_ipv4(ip: ipaddress.IPv4Address) -> None:
    """An IPv4-mapped or 6to4 spelling is judged like the IPv4 address itself."""
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80) | 1)
    assert embedded_ipv4(sixtofour) == ip
    assert is_bogon(str(mapped)) is is_bogon(str(ip)) is is_bogon(str(sixtofour))


@given(st.one_of(ipv4s, ipv6s))
def test_bogons_are_special_purpose(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """The SSRF guard's ranges are a superset of the bogons."""
    if is_bogon(str(ip)):
        assert is_special_purpose(str(ip))


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "240.1.2.3", "239.1.1.1", "ff0e::1",
                                "192.88.99.1", "2001:2::1", "garbage", "0x7f.1", "[::1]"])
def test_special_purpose_examples(ip: str) -> None:
    """Unspecified, reserved, multicast, relay/benchmark ranges and loose spellings are special."""
    assert is_special_purpose(ip)


def test_special_ranges_allow_list() -> None:
    """An allow-listed network is reachable; public addresses never were special."""
    ranges = SpecialRanges(allow=LAB)
    assert not ranges.contains("198.18.1.1") and ranges.contains("127.0.0.1")
    assert not is_special_purpose("93.184.216.34") and not is_special_purpose("2a00:1450::1")


@pytest.mark.parametrize(("text", "expected"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7F000001", "127.0.0.1"), ("10.0x10.1", "10.16.0.1"),
    ("1.2.3.4", "1.2.3.4"), ("0", "0.0.0.0"), ("::1", "::1"), ("[2001:db8::1]", "2001:db8::1"),
])
def test_parse_ip_loose_reads_inet_aton_spellings(text: str, expected: str) -> None:
    """Decimal, octal, hex and short forms parse like inet_aton."""
    assert str(parse_ip_loose(text)) == expected


@pytest.mark.parametrize("text", ["", "256.1.1.1", "1.2.3.256", "08.1.1.1", "0x", "1..2",
                                  "1.2.3.4.5", "4294967296", "-1", "1.2.3.4 ", "a.b.c.d",
                                  "١.٢.٣.٤"])
def test_parse_ip_loose_rejects_junk(text: str) -> None:
    """Out-of-range parts, bad digits and trailing junk do not parse."""
    assert parse_ip_loose(text) is None


@given(ipv4s, st.sampled_from(["dec", "oct", "hex"]), st.integers(min_value=1, max_value=4))
def test_parse_ip_loose_round_trips(ip: ipaddress.IPv4Address, base: str, parts: int) -> None:
    """Any address written in any base and any part count parses back to itself."""
    value, octets = int(ip), ip.packed
    pieces = [*octets[: parts - 1], int.from_bytes(octets[parts - 1:], "big")]
    formats: dict[str, Callable[[int], str]] = {
        "dec": str, "oct": lambda n: "0" + format(n, "o"), "hex": hex}
    fmt = formats[base]
    text = ".".join(fmt(p) for p in pieces)
    assert parse_ip_loose(text) == ipaddress.IPv4Address(value)


@given(st.text(alphabet="0123456789abcdefxX.", max_size=20))
def test_parse_ip_loose_agrees_with_inet_aton(text: str) -> None:
    """On digit-and-dot strings, the result equals the C library's inet_aton."""
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        expected = None
    assert parse_ip_loose(text) == expected


@given(st.text(max_size=40))
def test_never_raises_on_text(text: str) -> None:
    """Arbitrary text never raises in any of the checks."""
    is_bogon(text)
    is_loopback(text)
    is_special_purpose(text)
    parse_ip_loose(text)
