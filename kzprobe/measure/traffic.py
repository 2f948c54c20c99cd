"""Bytes each measurement moved over the network, for the record, the sweep and a budget.

TCP (plain, TLS, the HTTP GET, endpoint exchanges) is counted by the kernel: Linux's
``TCP_INFO`` keeps ``tcpi_bytes_sent`` and ``tcpi_bytes_received`` per socket, i.e. the
stream bytes that crossed it (TLS records and their overhead included; IP/TCP headers
excluded; a received FIN counts as one byte). They are read when the connection ends,
from whatever protocol holds the raw transport at that moment: ours, or a
:class:`_FinalReadBase` put in front of the TLS layer, because the loop closes the socket
right after ``connection_lost``. UDP counts datagram payloads as sent and received. DNS
through c-ares (whose sockets kzprobe never sees) is counted from the wire format of the
question and the answers (:func:`charge_dns`). The control helper's traffic is not counted.

A :class:`Meter` is one record's tally; :func:`metered` makes it the current one for the
code (and tasks) under it; steps charge the current meter, and without one (the helper,
tests) nothing is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import struct
from collections.abc import Iterator
from typing import Any

# struct tcp_info (linux/tcp.h): u64 tcpi_bytes_received at 128 (Linux 4.1),
# u64 tcpi_bytes_sent at 200 (Linux 4.19; retransmissions included).
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_INFO_LEN = 232
_RECEIVED_AT, _SENT_AT = 128, 200

_current: contextvars.ContextVar[Meter | None] = contextvars.ContextVar(
    "kzprobe_traffic_meter", default=None)


class Meter:
    """One record's bytes: every attempt's connections, datagrams and DNS questions."""

    __slots__ = ("_open", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._open: list[TcpTally] = []

    def add(self, *, sent: int = 0, received: int = 0) -> None:
        self.sent += sent
        self.received += received

    def track(self, transport: asyncio.BaseTransport) -> TcpTally:
        """Follow a TCP connection's kernel counters until it ends."""
        tally = TcpTally(self, transport.get_extra_info("socket"))
        self._open.append(tally)
        return tally

    def totals(self) -> dict[str, int]:
        """Read connections still open, then the record's ``x_bytes``."""
        for tally in self._open:
            tally.settle()
        self._open = [tally for tally in self._open if not tally.final]
        return {"sent": self.sent, "received": self.received}


class TcpTally:
    """One TCP connection: its counters as last read, charged to the meter as they grow."""

    __slots__ = ("final", "meter", "received", "sent", "sock")

    def __init__(self, meter: Meter, sock: Any) -> None:
        self.meter, self.sock = meter, sock
        self.sent = self.received = 0
        self.final = False

    def settle(self, *, final: bool = False) -> None:
        """Read the kernel's counters (a closed socket reads as nothing) and charge the
        growth; ``final`` when the connection is ending (no read after that)."""
        if self.final:
            return
        counts = _read_tcp_info(self.sock)
        self.final = final or counts is None
        if counts is None:
            return
        sent, received = counts
        self.meter.add(sent=max(0, sent - self.sent), received=max(0, received - self.received))
        self.sent, self.received = max(sent, self.sent), max(received, self.received)


def _read_tcp_info(sock: Any) -> tuple[int, int] | None:
    """(bytes sent, bytes received) of an open TCP socket, or None (closed, not Linux)."""
    if sock is None or _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except (OSError, ValueError):  # closed: asyncio says EBADF, uvloop ValueError
        return None
    if len(raw) < _SENT_AT + 8:
        return None
    (received,) = struct.unpack_from("=Q", raw, _RECEIVED_AT)
    (sent,) = struct.unpack_from("=Q", raw, _SENT_AT)
    return sent, received


@contextlib.contextmanager
def metered() -> Iterator[Meter]:
    """A fresh meter, current for the code (and the tasks it starts) inside."""
    meter = Meter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def current() -> Meter | None:
    return _current.get()


def track(transport: asyncio.BaseTransport) -> TcpTally | None:
    """A new TCP connection, followed when a measurement is metered (else None)."""
    meter = _current.get()
    return None if meter is None else meter.track(transport)


def charge(*, sent: int = 0, received: int = 0) -> None:
    """Charge datagram bytes to the current meter, if any."""
    meter = _current.get()
    if meter is not None:
        meter.add(sent=sent, received=received)


_RR_FIXED = 10  # type, class, TTL, RDLENGTH
_NAME_POINTER = 2  # answers name their owner by a compression pointer
_RDATA = {"A": 4, "AAAA": 16}
_HEADER, _QUESTION_FIXED, _EDNS_OPT = 12, 4, 11


def _name_length(name: str) -> int:
    """Wire length of a domain name: a length byte per label, the labels, the root."""
    labels = [label for label in name.rstrip(".").split(".") if label]
    return sum(1 + len(label.encode("idna" if not label.isascii() else "ascii",
                                    errors="replace"))
               for label in labels) + 1


def dns_sizes(host: str, answers: list[tuple[str, str]], *, answered: bool) -> tuple[int, int]:
    """(query, response) wire sizes of one question with EDNS, its ``answers`` as (type,
    value) pairs; no response when the lookup got none (a timeout)."""
    query = _HEADER + _name_length(host) + _QUESTION_FIXED + _EDNS_OPT
    if not answered:
        return query, 0
    records = sum(_NAME_POINTER + _RR_FIXED + _RDATA.get(kind, _name_length(value))
                  for kind, value in answers)
    return query, query + records


def charge_dns(host: str, answers: list[tuple[str, str]], *, answered: bool) -> None:
    """Charge one c-ares lookup (its sockets are c-ares's own) by its messages' sizes."""
    meter = _current.get()
    if meter is not None:
        sent, received = dns_sizes(host, answers, answered=answered)
        meter.add(sent=sent, received=received)


class _FinalReadBase(asyncio.BaseProtocol):
    """In front of the TLS layer on a raw transport: reads the counters at
    ``connection_lost``, while the socket is still open, then passes everything on."""

    def __init__(self, inner: Any, tally: TcpTally) -> None:
        self._inner, self._tally = inner, tally

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tally.settle(final=True)
        self._inner.connection_lost(exc)


class _FinalRead(_FinalReadBase, asyncio.Protocol):
    """For an inner protocol that takes ``data_received``."""

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)


class _FinalReadBuffered(_FinalReadBase, asyncio.BufferedProtocol):
    """For a buffered inner protocol (both loops' SSL protocols)."""

    def get_buffer(self, sizehint: int) -> Any:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)


def watch_raw(raw: asyncio.BaseTransport, tally: TcpTally | None) -> None:
    """After ``start_tls``: put a final read in front of the TLS protocol on ``raw``."""
    if tally is None or raw.is_closing():
        return
    inner = raw.get_protocol()
    buffered = hasattr(inner, "get_buffer") and not isinstance(inner, asyncio.Protocol)
    proxy = _FinalReadBuffered(inner, tally) if buffered else _FinalRead(inner, tally)
    raw.set_protocol(proxy)


def record_bytes(record: Any) -> tuple[int, int]:
    """(sent, received) from a record's ``test_keys.x_bytes``; (0, 0) when absent."""
    keys = record.get("test_keys") if isinstance(record, dict) else None
    counted = keys.get("x_bytes") if isinstance(keys, dict) else None
    if not isinstance(counted, dict):
        return 0, 0
    sent, received = counted.get("sent"), counted.get("received")
    return (sent if isinstance(sent, int) else 0, received if isinstance(received, int) else 0)
