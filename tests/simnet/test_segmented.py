"""The demo's servers read whole messages when a path cuts them into small segments
(tests/relay.py): the DPI box's SNI/Host peek and the DNS server's TCP framing."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from dnslib import QTYPE

from kzprobe.simnet.common import NameRules
from kzprobe.simnet.dns import DnsServer, Zone, query
from kzprobe.simnet.sni_filter import Action, SniFilter
from kzprobe.simnet.web import WebServer
from tests.relay import SegmentingRelay

from .clients import http_get, https_get, split, tls_connect


@pytest.fixture
async def box(web: WebServer) -> AsyncIterator[SniFilter]:
    """A filter resetting vpn.demo in front of the HTTPS and HTTP sites, behind nothing."""
    rules = NameRules(Action("pass"), {"vpn.demo": Action("reset")})
    filters = [SniFilter(("127.0.0.1", 0), web.address(scheme), rules=rules)
               for scheme in ("https", "http")]
    for f in filters:
        await f.start()
    yield filters[0]
    for f in filters:
        await f.stop()


async def _through(box: SniFilter, **kwargs: float) -> SegmentingRelay:
    return await SegmentingRelay(box.address[1], segment=int(kwargs.get("segment", 20)),
                                 pause=kwargs.get("pause", 0.001)).start()


async def test_sni_split_over_many_segments_is_still_found(
        web: WebServer, box: SniFilter, public_ctx: ssl.SSLContext) -> None:
    """A ClientHello cut into 20-byte segments: the box waits for the whole SNI, resets the
    blocked name and relays the other (its peek is a loop until the name is parseable)."""
    relay = await _through(box)
    try:
        with pytest.raises(ConnectionResetError):
            await tls_connect(("127.0.0.1", relay.port), "vpn.demo", public_ctx)
        status, _, body = split(await https_get(("127.0.0.1", relay.port), "news.demo",
                                                public_ctx))
    finally:
        await relay.close()
    assert status == 200 and b"<title>Demo News</title>" in body
    assert [(s.name, s.action) for s in box.seen] == [("vpn.demo", "reset"),
                                                      ("news.demo", "pass")]
    assert relay.segments_up >= 10


async def test_host_header_split_over_segments_is_still_found(web: WebServer) -> None:
    """An HTTP request cut into 7-byte segments: the Host header is read whole."""
    rules = NameRules(Action("pass"), {"vpn.demo": Action("reset")})
    box = SniFilter(("127.0.0.1", 0), web.address("http"), rules=rules)
    await box.start()
    try:
        async with SegmentingRelay(box.address[1], segment=7, pause=0.001) as relay:
            with pytest.raises(ConnectionResetError):
                await http_get(("127.0.0.1", relay.port), "vpn.demo")
            status, _, _ = split(await http_get(("127.0.0.1", relay.port), "news.demo"))
    finally:
        await box.stop()
    assert status == 200
    assert [(s.protocol, s.name, s.action) for s in box.seen] == [
        ("http", "vpn.demo", "reset"), ("http", "news.demo", "pass")]


async def test_dns_over_tcp_split_inside_the_length_prefix() -> None:
    """DNS over TCP one byte per segment, the 2-byte length prefix cut in half, both ways:
    the server (readexactly) and the client (readexactly) reassemble the message."""
    zone = Zone.build({"news.demo": ["127.0.0.20"]}, {})
    async with DnsServer(("127.0.0.1", 0), zone=zone) as server, \
            SegmentingRelay(server.address[1], segment=1, pause=0.0005) as relay:
        reply = await query("news.demo", "A", ("127.0.0.1", relay.port), transport="tcp",
                            timeout=5.0)
    assert [str(rr.rdata) for rr in reply.rr if QTYPE[rr.rtype] == "A"] == ["127.0.0.20"]
    assert relay.segments_up >= 20 and relay.segments_down >= 20
