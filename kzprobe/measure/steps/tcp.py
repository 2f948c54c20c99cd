"""TCP step: connect to one ip:port, recorded as OONI df-005 ``tcp_connect``.

A successful connection is kept open and handed to the TLS step and then to the HTTP
GET, so one HTTPS measurement costs one connection, and the request travels on exactly
the connection that was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any

from kzprobe.errors import classify
from kzprobe.measure import traffic
from kzprobe.measure.context import Stopwatch, connection_scratch
from kzprobe.netaddr import join_hostport

EARLY_DATA_LIMIT = 64 * 1024


class HeldProtocol(asyncio.Protocol):
    """Holds a connection between steps; keeps (bounded) bytes that arrive early."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.early = bytearray()
        self.lost: BaseException | None = None
        self.closed = False
        self.eof = False
        self.scratch: dict[str, Any] = {}
        self.tally: traffic.TcpTally | None = None  # set when the measurement is metered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if len(self.early) < EARLY_DATA_LIMIT:
            self.early += data[: EARLY_DATA_LIMIT - len(self.early)]

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep the write side open; the next step decides

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tally is not None:
            self.tally.settle(final=True)
        self.closed = True
        self.lost = exc


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpConnect:
    ip: str
    port: int
    failure: str | None
    t0: float
    t: float
    transaction_id: int = 0
    tags: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return join_hostport(self.ip, self.port)

    def archival(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "status": {"success": self.failure is None, "failure": self.failure, "blocked": None},
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
            "tags": list(self.tags),
        }


async def connect(
    ip: str, port: int, *, timeout: float, clock: Stopwatch, transaction_id: int = 0,
    tags: tuple[str, ...] = (), source: str | None = None
) -> tuple[TcpConnect, asyncio.Transport | None, HeldProtocol | None]:
    """Open a TCP connection; on failure the transport is None and the result says why."""
    loop = asyncio.get_running_loop()
    t0 = clock.now()
    scratch: dict[str, Any] = {}
    token = connection_scratch.set(scratch)
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                HeldProtocol, ip, port, local_addr=(source, 0) if source else None)
        protocol.scratch = scratch
        protocol.tally = traffic.track(transport)
    except Exception as exc:
        result = TcpConnect(
            ip=ip,
            port=port,
            failure=classify(exc),
            t0=t0,
            t=clock.now(),
            transaction_id=transaction_id,
            tags=tags,
        )
        return result, None, None
    finally:
        connection_scratch.reset(token)
    result = TcpConnect(ip=ip, port=port, failure=None, t0=t0, t=clock.now(),
                        transaction_id=transaction_id, tags=tags)
    return result, transport, protocol


def ack_at_once(transport: asyncio.BaseTransport) -> None:
    """Acknowledge the next segments at once (Linux ``TCP_QUICKACK``, which the kernel
    turns off again by itself).

    A server that writes a reply's length and its body as two segments with Nagle on
    (unbound over TLS does) holds the second until the first is ACKed, and Linux delays
    that ACK by up to 40 ms: a DoT lookup measured 47 ms instead of 9 ms on loopback
    (benchmarks/bench_dnsenc.py). The delay is our ACK policy, not the resolver's, so a
    lookup's timing should not carry it.
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)
