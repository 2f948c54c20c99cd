"""host:port text: one way to write it (IPv6 in brackets) and one way to read it back."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzprobe.netaddr import join_hostport, split_hostport


@pytest.mark.parametrize(("host", "port", "text"), [
    ("198.18.0.1", 443, "198.18.0.1:443"),
    ("::1", 53, "[::1]:53"),
    ("fe80::1%eth0", 80, "[fe80::1%eth0]:80"),
    ("news.demo", "8080", "news.demo:8080"),
])
def test_join_brackets_ipv6_only(host: str, port: int | str, text: str) -> None:
    """As Go's net.JoinHostPort: brackets exactly when the host holds a colon."""
    assert join_hostport(host, port) == text


@pytest.mark.parametrize(("text", "parts"), [
    ("198.18.0.1:443", ("198.18.0.1", 443)),
    ("[::1]:53", ("::1", 53)),
    ("[2001:db8::1]:0", ("2001:db8::1", 0)),
    ("news.demo:65535", ("news.demo", 65535)),
])
def test_split_reads_what_join_writes(text: str, parts: tuple[str, int]) -> None:
    assert split_hostport(text) == parts


@pytest.mark.parametrize("text", [
    "", "198.18.0.1", ":443", "[]:443", "::1:53", "[::1]53", "[::1]", "[::1:53",
    "host:", "host:65536", "host:-1", "host:+1", "host:²", "host:1_0", "host: 80",
    "[a]b]:1", "[::1]:99999999999999999999",
])
def test_split_refuses_malformed(text: str) -> None:
    """No port, an empty host, an unbracketed IPv6, a port out of range or not ASCII digits."""
    assert split_hostport(text) is None


HOSTS = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
)


@given(HOSTS, st.integers(0, 65535))
def test_round_trip(host: str, port: int) -> None:
    """Whatever is joined splits back to the same host and port."""
    assert split_hostport(join_hostport(host, port)) == (host, port)


@given(st.text(max_size=60))
def test_split_any_text(text: str) -> None:
    """Any text gives None, or a host and an in-range port that survive a join and a split."""
    parts = split_hostport(text)
    if parts is not None:
        host, port = parts
        assert 0 <= port <= 65535 and host
        assert split_hostport(join_hostport(host, port)) == parts
        assert ":" not in host or text.startswith("[")


def test_ipv6_host_needs_no_canonical_form() -> None:
    """The host is returned as written: canonicalising addresses is the caller's business."""
    host, _ = split_hostport("[2001:DB8:0::1]:443") or ("", 0)
    assert host == "2001:DB8:0::1" and ipaddress.ip_address(host).compressed == "2001:db8::1"


def test_analysis_endpoints_are_canonical() -> None:
    """The analysis keys endpoints by canonical IP and port, and refuses what is ambiguous."""
    from kzprobe.verdict.analysis.records import join_endpoint, split_endpoint

    assert split_endpoint("[2001:DB8:0::1]:0443") == ("2001:db8::1", "443")
    assert join_endpoint(*(split_endpoint("[2001:db8::1]:443") or ("", ""))) \
        == "[2001:db8::1]:443"
    assert split_endpoint("::1:443") is None  # an IPv6 address, or ::1 port 443?
    assert split_endpoint("news.demo:443") is None  # endpoints are addresses
