"""Loopback censors for endpoint tests: a UDP relay that drops, and the simnet SNI filter.

The "outside" vantage (the control helper) dials from 127.0.0.2, which every censor
here exempts, as the demo network does: the same endpoint works from outside and is
blocked from inside, which is what an interference code needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from kzprobe.simnet.common import NameRules
from kzprobe.simnet.sni_filter import Action, SniFilter

OUTSIDE = "127.0.0.2"  # the helper's source address; censors let it through
MAX_FLOWS = 64


class _Upstream(asyncio.DatagramProtocol):
    """One client's flow to the real server; replies go back to that client."""

    def __init__(self, relay: UdpRelay, client: Any) -> None:
        self.relay, self.client = relay, client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.relay.front is not None:
            self.relay.front.sendto(data, self.client)


class UdpRelay(asyncio.DatagramProtocol):
    """Relays datagrams to ``upstream``; with ``drop`` set, silently drops what clients
    other than the exempt ones send (a censor's UDP blackhole for that address)."""

    def __init__(self, upstream: tuple[str, int], *, drop: bool = True,
                 exempt: frozenset[str] = frozenset({OUTSIDE})) -> None:
        self.upstream, self.drop, self.exempt = upstream, drop, exempt
        self.front: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, asyncio.DatagramTransport] = {}
        self.dropped = 0
        self.port = 0
        self._opening: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.drop and addr[0] not in self.exempt:
            self.dropped += 1
            return
        flow = self.flows.get(addr)
        if flow is not None:
            flow.sendto(data)
        elif len(self.flows) + len(self._opening) < MAX_FLOWS:
            task = asyncio.ensure_future(self._open(addr, data))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, addr: Any, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, addr), remote_addr=self.upstream)
        self.flows[addr] = transport
        transport.sendto(data)

    def close(self) -> None:
        for flow in self.flows.values():
            flow.close()
        if self.front is not None:
            self.front.close()


@contextlib.asynccontextmanager
async def udp_relay(upstream_port: int, *, drop: bool = True) -> AsyncIterator[UdpRelay]:
    loop = asyncio.get_running_loop()
    relay = UdpRelay(("127.0.0.1", upstream_port), drop=drop)
    transport, _ = await loop.create_datagram_endpoint(lambda: relay,
                                                       local_addr=("127.0.0.1", 0))
    relay.port = transport.get_extra_info("sockname")[1]
    try:
        yield relay
    finally:
        relay.close()


@contextlib.asynccontextmanager
async def tcp_filter(upstream_port: int, default: str = "pass",
                     rules: dict[str, str] | None = None) -> AsyncIterator[SniFilter]:
    """kzprobe.simnet's SNI filter in front of ``upstream_port``; the helper is exempt.

    ``default`` applies to connections without a name (OpenVPN over TCP: a port block).
    """
    table = NameRules(Action.parse(default),
                      {name: Action.parse(spec) for name, spec in (rules or {}).items()})
    box = SniFilter(("127.0.0.1", 0), ("127.0.0.1", upstream_port), rules=table,
                    peek_timeout=0.3, blackhole_seconds=10.0, exempt=frozenset({OUTSIDE}))
    await box.start()
    try:
        yield box
    finally:
        await box.stop()
