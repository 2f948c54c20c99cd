"""The demo's pure-Python DoT server (kzprobe.simnet.dot) answers kzprobe's DoT lookups
with its DNS server's zone, and closes a connection that says nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import trustme

from kzprobe.config import parse_resolver
from kzprobe.measure.clock import Stopwatch
from kzprobe.measure.steps import dnsenc
from kzprobe.simnet.dns import DnsServer, Zone
from kzprobe.simnet.dot import DotServer
from kzprobe.simnet.pki import PublicCA


async def test_simnet_dot_answers_from_the_zone(ca: trustme.CA, ca_file: Path) -> None:
    dns = DnsServer(("127.0.0.1", 0), zone=Zone.build({"site.demo": ["127.0.0.20"]}))
    await dns.start()
    dot = DotServer(("127.0.0.1", 0), dns, PublicCA(ca).server_context("dns.demo"),
                    idle_timeout=0.5)
    await dot.start()
    try:
        resolver = parse_resolver(f"tls://127.0.0.1:{dot.address[1]}?sni=dns.demo")
        found = await dnsenc.lookup_encrypted("site.demo", "A", resolver, timeout=3.0,
                                              clock=Stopwatch(), ca_file=ca_file)
        missing = await dnsenc.lookup_encrypted("nope.demo", "A", resolver, timeout=3.0,
                                                clock=Stopwatch(), ca_file=ca_file)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", dot.address[1], ssl=PublicCA(ca).client_context(),
            server_hostname="dns.demo")
        closed = await asyncio.wait_for(reader.read(), 5)  # idle: the server hangs up
        writer.close()
    finally:
        await dot.stop()
        await dns.stop()
    assert found.failure is None and found.addresses == ["127.0.0.20"]
    assert missing.failure == "dns_nxdomain_error"
    assert closed == b""
