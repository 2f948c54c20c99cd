"""kzprobe.measure.steps.udp: one request, retransmissions, bounded reads, ICMP errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kzprobe.measure.context import Stopwatch
from kzprobe.measure.steps.udp import exchange
from tests.servers import refused_port


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes, int], list[bytes]]) -> None:
        self.answer, self.seen = answer, 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen += 1
        for reply in self.answer(data, self.seen):
            assert self.transport is not None
            self.transport.sendto(reply, addr)


@pytest.fixture
async def responder() -> AsyncIterator[Callable[..., Any]]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(answer: Callable[[bytes, int], list[bytes]]) -> tuple[int, _Responder]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Responder(answer), local_addr=("127.0.0.1", 0))
        transports.append(transport)
        return transport.get_extra_info("sockname")[1], protocol

    yield start
    for transport in transports:
        transport.close()


async def test_reply_accepted_after_ignoring_others(responder: Callable[..., Any]) -> None:
    """Unaccepted datagrams are recorded and skipped; the matching one ends the exchange."""
    port, _ = await responder(lambda data, n: [b"noise", b"ok:" + data])
    result = await exchange("127.0.0.1", port, b"ping", accept=lambda d: d.startswith(b"ok:"),
                            timeout=2.0, clock=Stopwatch())
    assert result.failure is None and result.reply == b"ok:ping"
    assert [e.operation for e in result.events] == ["write_to", "read_from", "read_from"]
    assert result.events[2].num_bytes == 7


async def test_retransmits_until_answered(responder: Callable[..., Any]) -> None:
    """The first tries go unanswered; a later retransmission (built per try) is answered."""
    port, server = await responder(lambda data, n: [data] if n >= 3 else [])
    result = await exchange("127.0.0.1", port, lambda attempt: b"try%d" % attempt,
                            accept=lambda d: True, timeout=1.5, tries=3, clock=Stopwatch())
    assert result.failure is None and result.reply == b"try2" and server.seen == 3


async def test_silence_is_a_timeout_within_the_deadline(responder: Callable[..., Any]) -> None:
    """No reply: generic_timeout_error, after about ``timeout`` seconds, not more."""
    port, server = await responder(lambda data, n: [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await exchange("127.0.0.1", port, b"x", accept=lambda d: True, timeout=0.6,
                            tries=3, clock=Stopwatch())
    assert result.failure == "generic_timeout_error" and result.reply is None
    assert server.seen == 3 and loop.time() - started < 1.5


async def test_port_unreachable_is_refused() -> None:
    """An ICMP port-unreachable on a connected socket is connection_refused."""
    result = await exchange("127.0.0.1", refused_port(), b"x", accept=lambda d: True,
                            timeout=2.0, clock=Stopwatch())
    assert result.failure == "connection_refused"


async def test_a_flood_of_wrong_datagrams_is_bounded(responder: Callable[..., Any]) -> None:
    """A peer that answers every request with many useless datagrams cannot hold the probe."""
    port, _ = await responder(lambda data, n: [b"junk"] * 200)
    result = await exchange("127.0.0.1", port, b"x", accept=lambda d: False, timeout=1.0,
                            tries=1, clock=Stopwatch())
    assert result.failure == "generic_timeout_error"
    assert len(result.events) <= 40
