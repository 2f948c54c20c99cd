"""UDP step: send one request datagram (retransmitted) and wait for a matching reply.

UDP has no connect to measure, so the request/reply exchange *is* the reachability
test (OpenVPN over UDP, WireGuard, STUN). The socket is connected, so only datagrams
from the target's address are read, and an ICMP port-unreachable surfaces as
``connection_refused``. Reads are bounded in count and size; the whole exchange in time.
Events are recorded as OONI df-008 ``network_events``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kzprobe import failures
from kzprobe.errors import classify
from kzprobe.measure import traffic
from kzprobe.measure.context import Stopwatch
from kzprobe.netaddr import join_hostport

MAX_DATAGRAMS = 16  # datagrams read per exchange before giving up on a chatty peer
MAX_DATAGRAM_BYTES = 4096  # larger datagrams are recorded by size, kept truncated


@dataclass(frozen=True, slots=True, kw_only=True)
class NetEvent:
    """One df-008 network event."""

    operation: str  # "write_to" | "read_from"
    address: str
    num_bytes: int
    failure: str | None
    t0: float
    t: float
    proto: str = "udp"
    transaction_id: int = 0
    tags: tuple[str, ...] = ()

    def archival(self) -> dict[str, Any]:
        return {"operation": self.operation, "address": self.address, "proto": self.proto,
                "num_bytes": self.num_bytes, "failure": self.failure, "t0": self.t0,
                "t": self.t, "transaction_id": self.transaction_id, "tags": list(self.tags)}


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpExchange:
    """The outcome: the accepted reply (if any) and every event on the way."""

    address: str
    failure: str | None
    reply: bytes | None
    events: tuple[NetEvent, ...]
    t0: float
    t: float


class _Collector(asyncio.DatagramProtocol):
    """Queues datagrams (bounded) and the first socket error for the waiting exchange."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue(MAX_DATAGRAMS)
        self.meter = traffic.current()  # made inside the exchange: its measurement's meter

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.meter is not None:
            self.meter.add(received=len(data))
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if not self.queue.full():
            self.queue.put_nowait(exc)


format_address = join_hostport  # the name the endpoint experiments import


@dataclass(slots=True)
class _Run:
    """Mutable state of one exchange while it runs."""

    address: str
    clock: Stopwatch
    tid: int
    tags: tuple[str, ...]
    events: list[NetEvent]

    def event(self, operation: str, size: int, failure: str | None, t0: float) -> None:
        self.events.append(NetEvent(operation=operation, address=self.address, num_bytes=size,
                                    failure=failure, t0=t0, t=self.clock.now(),
                                    transaction_id=self.tid, tags=self.tags))


async def _await_reply(run: _Run, collector: _Collector, accept: Callable[[bytes], bool],
                       wait: float) -> bytes | None:
    """Read until an accepted datagram arrives or ``wait`` passes; errors are raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0:
        t0 = run.clock.now()
        try:
            async with asyncio.timeout(left):
                item = await collector.queue.get()
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            run.event("read_from", 0, classify(item), t0)
            raise item
        run.event("read_from", len(item), None, t0)
        if accept(item[:MAX_DATAGRAM_BYTES]):
            return item[:MAX_DATAGRAM_BYTES]
        if len(run.events) >= 2 * MAX_DATAGRAMS:
            break
    return None


async def exchange(
    ip: str, port: int, request: bytes | Callable[[int], bytes], *,
    accept: Callable[[bytes], bool], timeout: float, clock: Stopwatch, tries: int = 3,
    transaction_id: int = 0, tags: tuple[str, ...] = (), source: str | None = None,
) -> UdpExchange:
    """Send ``request`` up to ``tries`` times (evenly over ``timeout``) until ``accept``s a reply.

    ``request`` may be a function of the try number (0, 1, ...) for protocols whose
    retransmissions differ (a fresh timestamp, a new transaction id).
    """
    run = _Run(format_address(ip, port), clock, transaction_id, tags, [])
    t0 = clock.now()
    loop = asyncio.get_running_loop()
    transport: asyncio.DatagramTransport | None = None
    failure: str | None = failures.GENERIC_TIMEOUT_ERROR
    reply: bytes | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, collector = await loop.create_datagram_endpoint(
                _Collector, remote_addr=(ip, port),
                local_addr=(source, 0) if source else None)
            for attempt in range(max(1, tries)):
                payload = request(attempt) if callable(request) else request
                sent_at = clock.now()
                transport.sendto(payload)
                traffic.charge(sent=len(payload))
                run.event("write_to", len(payload), None, sent_at)
                reply = await _await_reply(run, collector, accept, timeout / max(1, tries))
                if reply is not None:
                    failure = None
                    break
    except Exception as exc:
        failure = classify(exc)
    finally:
        if transport is not None:
            transport.close()
    return UdpExchange(address=run.address, failure=failure, reply=reply,
                       events=tuple(run.events), t0=t0, t=clock.now())
