"""The ClientHello/Host parser: real hellos, fragments, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzprobe.simnet.sni import Sniff, sniff

from .clients import client_hello

HELLO = client_hello("vpn.demo")


def _reframe(hello: bytes, cut: int) -> bytes:
    """The same handshake message split into two TLS records at ``cut``."""
    payload = hello[5:]
    first, second = payload[:cut], payload[cut:]
    header = hello[:3]
    return (header + len(first).to_bytes(2, "big") + first
            + header + len(second).to_bytes(2, "big") + second)


def test_real_client_hello_names_the_sni() -> None:
    """A ClientHello from Python's ssl module yields its SNI."""
    assert sniff(HELLO) == Sniff("tls", "vpn.demo")


def test_idna_sni_is_the_a_label() -> None:
    """A Unicode server name goes on the wire as punycode, and that is what is reported."""
    assert sniff(client_hello("жаңалықтар.demo")) == Sniff("tls", "xn--80aaav1a5am5es3bmc.demo")


def test_hello_without_sni() -> None:
    """A ClientHello without server_name is TLS with no name."""
    assert sniff(client_hello(None)) == Sniff("tls", None)


def test_every_prefix_asks_for_more() -> None:
    """Any strict prefix of a ClientHello means "need more bytes", never a wrong verdict."""
    assert all(sniff(HELLO[:n]) is None for n in range(1, len(HELLO)))


def test_hello_split_over_two_records() -> None:
    """A handshake message fragmented across records is reassembled."""
    assert sniff(_reframe(HELLO, 40)) == Sniff("tls", "vpn.demo")


def test_not_a_client_hello() -> None:
    """A handshake record holding another message type is TLS without a name."""
    other = HELLO[:5] + b"\x02" + HELLO[6:]
    assert sniff(other) == Sniff("tls", None)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"GET / HTTP/1.1\r\nHost: News.Demo:8080\r\n\r\n", Sniff("http", "news.demo")),
    (b"POST /x HTTP/1.1\r\nUser-Agent: a\r\nhost:  blocked.demo.\r\n\r\nbody",
     Sniff("http", "blocked.demo")),
    (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Sniff("http", "::1")),
    (b"GET / HTTP/1.0\r\n\r\n", Sniff("http", None)),
    (b"GET / HTTP/1.1\nHost: lf.demo\n\n", Sniff("http", "lf.demo")),
    (b"SSH-2.0-OpenSSH_9.6\r\n", Sniff("other")),
    (b"\x00\x01\x02", Sniff("other")),
])
def test_http_host(raw: bytes, expected: Sniff) -> None:
    """The Host header names an HTTP request (port, case and trailing dot removed)."""
    assert sniff(raw) == expected


@pytest.mark.parametrize("raw", [b"", b"GE", b"GET / HTTP/1.1\r\nHost: a.demo\r\n"])
def test_incomplete_http_asks_for_more(raw: bytes) -> None:
    """A request whose head has not ended yet means "need more bytes"."""
    assert sniff(raw) is None


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    """Arbitrary bytes give a verdict or "need more", never an exception."""
    result = sniff(data)
    assert result is None or isinstance(result, Sniff)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(HELLO)))
def test_mutated_hellos_never_raise(edits: list[tuple[int, int]], cut: int) -> None:
    """A real ClientHello with corrupted bytes (lengths included) never crashes the parser."""
    data = bytearray(HELLO)
    for position, value in edits:
        data[position] = value
    result = sniff(bytes(data[:cut]))
    assert result is None or isinstance(result, Sniff)
