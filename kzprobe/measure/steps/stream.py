"""Request/response on a measured TCP or TLS connection, with bounded, deadlined reads.

The TCP and TLS steps hand over a connection whose protocol is a
:class:`~kzprobe.measure.steps.tcp.HeldProtocol`; endpoint experiments (OpenVPN over TCP, Tor's
VERSIONS cell) then need to write a message and read until a reply is complete. This
module swaps in a protocol that wakes a waiter on every read, keeps at most ``limit``
bytes, and records the write and the read as OONI df-008 ``network_events``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from kzprobe.errors import classify
from kzprobe.measure.context import Stopwatch
from kzprobe.measure.steps.tcp import HeldProtocol
from kzprobe.measure.steps.udp import NetEvent
from kzprobe.measure.traffic import TcpTally

READ_LIMIT = 64 * 1024


class PeerClosed(EOFError):
    """The peer closed (FIN) before the reply was complete: ``eof_error``."""


class ReplyTooLarge(ValueError):
    """More than the read limit arrived without a complete reply."""


class StreamProtocol(asyncio.Protocol):
    """Buffers (bounded) what the peer sends and wakes the reader."""

    def __init__(self, limit: int = READ_LIMIT) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.eof = False
        self.lost: BaseException | None = None
        self.closed = False
        self.tally: TcpTally | None = None
        self._wake = asyncio.Event()

    @classmethod
    def adopt(cls, transport: asyncio.Transport, held: HeldProtocol) -> StreamProtocol:
        """Take over a held connection, keeping what it already received."""
        stream = cls()
        stream.buffer += held.early
        stream.eof, stream.lost, stream.closed = held.eof, held.lost, held.closed
        stream.tally = held.tally
        transport.set_protocol(stream)
        return stream

    def data_received(self, data: bytes) -> None:
        room = self.limit + 1 - len(self.buffer)
        if room > 0:
            self.buffer += data[:room]
        self._wake.set()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tally is not None:
            self.tally.settle(final=True)
        self.closed, self.lost = True, exc
        self._wake.set()

    async def read_until(self, complete: Callable[[bytes], int | None]) -> bytes:
        """Wait until ``complete(buffer)`` gives the reply's length; return those bytes."""
        while True:
            size = complete(bytes(self.buffer))
            if size is not None:
                reply = bytes(self.buffer[:size])
                del self.buffer[:size]
                return reply
            if len(self.buffer) > self.limit:
                raise ReplyTooLarge(f"no complete reply in {self.limit} bytes")
            if self.lost is not None:
                raise self.lost
            if self.eof or self.closed:
                raise PeerClosed("peer closed before the reply was complete")
            self._wake.clear()
            await self._wake.wait()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamExchange:
    """A request written and the reply read (or why not), with its events."""

    reply: bytes | None
    failure: str | None
    events: tuple[NetEvent, ...]


async def request(
    transport: asyncio.Transport, stream: StreamProtocol, payload: bytes, *,
    complete: Callable[[bytes], int | None], timeout: float, clock: Stopwatch, address: str,
    transaction_id: int = 0, tags: tuple[str, ...] = (),
) -> StreamExchange:
    """Write ``payload`` (if any), then read one complete reply within ``timeout``."""
    def event(operation: str, size: int, failure: str | None, t0: float) -> NetEvent:
        return NetEvent(operation=operation, address=address, num_bytes=size, failure=failure,
                        t0=t0, t=clock.now(), proto="tcp", transaction_id=transaction_id,
                        tags=tags)

    events: list[NetEvent] = []
    if payload:
        t0 = clock.now()
        transport.write(payload)
        events.append(event("write", len(payload), None, t0))
    t0 = clock.now()
    try:
        async with asyncio.timeout(timeout):
            reply = await stream.read_until(complete)
    except Exception as exc:
        failure = classify(exc)
        events.append(event("read", len(stream.buffer), failure, t0))
        return StreamExchange(reply=None, failure=failure, events=tuple(events))
    events.append(event("read", len(reply), None, t0))
    return StreamExchange(reply=reply, failure=None, events=tuple(events))
