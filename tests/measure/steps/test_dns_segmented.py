"""The DNS step's TCP fallback over a path that cuts the answer into small segments.

The probe asks over UDP; a truncated answer (TC) makes c-ares retry over TCP to the same
address, where the segmenting relay (tests/relay.py) delivers the length-prefixed answer
a few bytes at a time. The lookup must get the whole answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kzprobe.config import parse_resolver
from kzprobe.measure.context import Stopwatch
from kzprobe.measure.steps.dns import lookup_udp
from kzprobe.simnet.dns import DnsServer, Zone
from tests.relay import SegmentingRelay

NAMES = {"many.demo": [f"127.0.0.{i}" for i in range(1, 41)]}  # a ~700-byte answer


class _UdpForward(asyncio.DatagramProtocol):
    """UDP on the relay's port number, passed straight to the server (only TCP is cut)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.client: Any = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if tuple(addr[:2]) == self.upstream:
            if self.client is not None:
                self.transport.sendto(data, self.client)
        else:
            self.client = addr
            self.transport.sendto(data, self.upstream)


async def test_truncated_answer_is_read_whole_over_a_segmented_tcp_path() -> None:
    """TC over UDP, then the TCP answer in 16-byte segments: all 40 addresses arrive."""
    loop = asyncio.get_running_loop()
    async with DnsServer(("127.0.0.1", 0), zone=Zone.build(NAMES, {})) as server:
        server.set_rule("many.demo", "truncate")
        upstream = ("127.0.0.1", server.address[1])
        async with SegmentingRelay(server.address[1], segment=16, pause=0.001) as relay:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpForward(upstream), local_addr=("127.0.0.1", relay.port))
            try:
                lookup = await lookup_udp("many.demo", "A",
                                          parse_resolver(f"127.0.0.1:{relay.port}"),
                                          timeout=3.0, tries=1, clock=Stopwatch())
            finally:
                udp.close()
        transports = [q.transport for q in server.log if q.name == "many.demo"]
    assert lookup.failure is None
    assert sorted(lookup.addresses) == sorted(NAMES["many.demo"])
    assert "udp" in transports and "tcp" in transports
    assert relay.segments_down >= 20
