"""Find the host name a connection is for: TLS ClientHello SNI or HTTP Host header.

This is what a DPI box sees. The parser is written for hostile input: every length is
checked before it is used, it never raises, and it reports "need more bytes" separately
from "not parseable" so the caller can keep reading up to its own byte/time bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tls", "http", "other"]

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_MAX_HELLO = 64 * 1024
_HTTP_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                 b"TRACE", b"CONNECT")


@dataclass(frozen=True, slots=True)
class Sniff:
    """What the first bytes of a connection say: its protocol and host name, if any."""

    protocol: Protocol
    name: str | None = None


class _Short(Exception):
    """The bytes end before the structure does."""


class _Bad(Exception):
    """The bytes cannot be this structure."""


class _Cursor:
    """Bounds-checked big-endian reads over a bytes buffer."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Short
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def sniff(data: bytes) -> Sniff | None:
    """Classify the first bytes of a connection; None means "send more bytes"."""
    if not data:
        return None
    if data[0] == _HANDSHAKE:
        return _sniff_tls(data)
    return _sniff_http(data)


# --------------------------------------------------------------------------- TLS


def _sniff_tls(data: bytes) -> Sniff | None:
    try:
        hello = _handshake_message(data)
        return Sniff("tls", _server_name(hello))
    except _Short:
        return None
    except _Bad:
        return Sniff("other") if len(data) < 2 or data[1] != 3 else Sniff("tls")


def _handshake_message(data: bytes) -> bytes:
    """Reassemble the first handshake message from one or more TLS records."""
    cur, payload = _Cursor(data), b""
    while True:
        content_type, major = cur.uint(1), cur.uint(1)
        cur.uint(1)  # minor version: any
        if content_type != _HANDSHAKE or major != 3:
            raise _Bad
        payload += cur.vector(2)
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise _Bad
            length = int.from_bytes(payload[1:4], "big")
            if length > _MAX_HELLO:
                raise _Bad
            if len(payload) >= 4 + length:
                return payload[4:4 + length]


def _server_name(hello: bytes) -> str | None:
    """The host_name in a ClientHello body's server_name extension, if any."""
    try:
        cur = _Cursor(hello)
        cur.take(2 + 32)  # legacy_version, random
        cur.vector(1)  # session id
        cur.vector(2)  # cipher suites
        cur.vector(1)  # compression methods
        if cur.left == 0:
            return None  # no extensions at all (SSLv3-style hello)
        extensions = _Cursor(cur.vector(2))
        while extensions.left:
            ext_type, body = extensions.uint(2), extensions.vector(2)
            if ext_type == _EXT_SERVER_NAME:
                return _host_name(body)
        return None
    except _Short:
        raise _Bad from None  # inside a complete message: malformed, not short


def _host_name(body: bytes) -> str | None:
    names = _Cursor(_Cursor(body).vector(2))
    while names.left:
        name_type, name = names.uint(1), names.vector(2)
        if name_type == 0 and name:
            return _decode_name(name)
    return None


def _decode_name(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip().rstrip(".").lower()


# --------------------------------------------------------------------------- HTTP


def _sniff_http(data: bytes) -> Sniff | None:
    method, space, _ = data.partition(b" ")
    if not space:
        if len(data) < 8 and any(m.startswith(data) for m in _HTTP_METHODS):
            return None
        return Sniff("other")
    if method not in _HTTP_METHODS:
        return Sniff("other")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            return None
    return Sniff("http", _host_header(data[:end]))


def _host_header(head: bytes) -> str | None:
    for line in head.split(b"\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == b"host":
            return _strip_port(_decode_name(value.strip())).rstrip(".") or None
    return None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host
