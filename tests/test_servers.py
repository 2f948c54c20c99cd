"""The tests' one DNS server: answers over UDP and TCP, records what it is asked, and can
stay silent or send what a handler builds (issue 15: one fake DNS server)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.servers import DnsServer, Query, addresses


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = DnsServer(zone={"site.test": ["127.0.0.7", "::1"]})
    await server.start()
    yield server
    server.close()


async def _udp(port: int, query: DNSRecord, timeout: float = 1.0) -> DNSRecord:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, bytes(query.pack()))
        async with asyncio.timeout(timeout):
            return DNSRecord.parse(await loop.sock_recv(sock, 65535))


async def _tcp(port: int, query: DNSRecord) -> DNSRecord | None:
    """The answer over TCP, or None when the server closes without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = bytes(query.pack())
        writer.write(struct.pack("!H", len(data)) + data)
        async with asyncio.timeout(1.0):
            head = await reader.read(2)
            if not head:
                return None
            return DNSRecord.parse(await reader.readexactly(struct.unpack("!H", head)[0]))
    finally:
        writer.close()


def _ips(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


async def test_answers_over_udp_and_tcp_on_one_port(dns: DnsServer) -> None:
    """The zone answers A and AAAA over both wires; unknown names are NXDOMAIN."""
    assert _ips(await _udp(dns.port, DNSRecord.question("site.test"))) == ["127.0.0.7"]
    tcp = await _tcp(dns.port, DNSRecord.question("Site.Test", "AAAA"))
    assert tcp is not None and _ips(tcp) == ["::1"]
    unknown = await _udp(dns.port, DNSRecord.question("other.test"))
    assert unknown.header.rcode == RCODE.NXDOMAIN


async def test_records_every_query(dns: DnsServer) -> None:
    """Name (lower case, no dot), type and wire of each question, in order."""
    await _udp(dns.port, DNSRecord.question("site.test"))
    await _tcp(dns.port, DNSRecord.question("SITE.test", "AAAA"))
    assert dns.queries == [Query("site.test", "A", "udp"), Query("site.test", "AAAA", "tcp")]


async def test_silence_over_udp_and_tcp(dns: DnsServer) -> None:
    """A ``silent`` fault or a handler returning None: no UDP answer, TCP closes."""
    dns.faults["quiet.test"] = "silent"
    dns.handlers["mute.test"] = lambda request, proto: None
    for name in ("quiet.test", "mute.test"):
        with pytest.raises(TimeoutError):
            await _udp(dns.port, DNSRecord.question(name), timeout=0.3)
        assert await _tcp(dns.port, DNSRecord.question(name)) is None
    assert [query.name for query in dns.queries] == ["quiet.test"] * 2 + ["mute.test"] * 2


async def test_handlers_answer_per_wire_with_records_or_bytes(dns: DnsServer) -> None:
    """A handler sees the wire it was asked on; it may return a record or raw bytes."""
    def per_wire(request: DNSRecord, proto: str) -> DNSRecord:
        return addresses(request, ["127.0.0.1" if proto == "udp" else "127.0.0.2"])

    dns.handlers["wire.test"] = per_wire
    dns.handlers["raw.test"] = lambda request, proto: bytes(
        addresses(request, ["127.0.0.3"]).pack())
    assert _ips(await _udp(dns.port, DNSRecord.question("wire.test"))) == ["127.0.0.1"]
    tcp = await _tcp(dns.port, DNSRecord.question("wire.test"))
    assert tcp is not None and _ips(tcp) == ["127.0.0.2"]
    raw = await _udp(dns.port, DNSRecord.question("raw.test"))
    assert raw.q.qtype == QTYPE.A and _ips(raw) == ["127.0.0.3"]


async def test_udp_only_leaves_tcp_closed() -> None:
    """``tcp=False``: a resolver that only speaks UDP (TCP is refused)."""
    server = DnsServer(zone={"site.test": ["127.0.0.7"]}, tcp=False)
    await server.start()
    try:
        assert _ips(await _udp(server.port, DNSRecord.question("site.test"))) == ["127.0.0.7"]
        with pytest.raises(ConnectionRefusedError):
            await _tcp(server.port, DNSRecord.question("site.test"))
    finally:
        server.close()
