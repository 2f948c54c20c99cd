"""The SNI/Host filter against real TLS and HTTP clients."""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from kzprobe.errors import classify
from kzprobe.simnet.common import HostPort, NameRules
from kzprobe.simnet.sni_filter import Action, SniFilter
from kzprobe.simnet.web import WebServer

from .clients import client_hello, close, http_get, https_get, split, tls_connect

StartFilter = Callable[..., Coroutine[Any, Any, SniFilter]]


@pytest.fixture
async def start_filter() -> AsyncIterator[StartFilter]:
    filters: list[SniFilter] = []

    async def start(upstream: HostPort | None, rules: dict[str, str],
                    default: str = "pass", **kwargs: Any) -> SniFilter:
        table = NameRules(Action.parse(default),
                          {k: Action.parse(v) for k, v in rules.items()})
        box = SniFilter(("127.0.0.1", 0), upstream, rules=table, **kwargs)
        await box.start()
        filters.append(box)
        return box

    yield start
    for box in filters:
        await box.stop()


async def test_unblocked_sni_gets_the_page(web: WebServer, start_filter: StartFilter,
                                           public_ctx: ssl.SSLContext) -> None:
    """An unlisted SNI is relayed transparently: verified handshake and the real page."""
    box = await start_filter(web.address("https"), {"vpn.demo": "reset"})
    status, _, body = split(await https_get(box.address, "news.demo", public_ctx))
    assert (status, b"<title>Demo News</title>" in body) == (200, True)
    assert [(s.protocol, s.name, s.action) for s in box.seen] == [("tls", "news.demo", "pass")]


async def test_reset_is_a_real_rst(web: WebServer, start_filter: StartFilter,
                                   public_ctx: ssl.SSLContext) -> None:
    """`reset` aborts the handshake with a TCP RST: ConnectionResetError, errno ECONNRESET."""
    box = await start_filter(web.address("https"), {"vpn.demo": "reset"})
    with pytest.raises(ConnectionResetError) as info:
        await tls_connect(box.address, "vpn.demo", public_ctx)
    assert info.value.errno == errno.ECONNRESET
    assert classify(info.value) == "connection_reset"


async def test_blackhole_times_out_and_keeps_the_socket(web: WebServer, start_filter: StartFilter,
                                                        public_ctx: ssl.SSLContext) -> None:
    """`blackhole` never answers and never closes: the client's handshake times out."""
    box = await start_filter(web.address("https"), {"vpn.demo": "blackhole"})
    with pytest.raises(TimeoutError) as info:
        await tls_connect(box.address, "vpn.demo", public_ctx, timeout=0.5)
    reader, writer = await asyncio.open_connection(*box.address)
    writer.write(client_hello("vpn.demo"))
    with pytest.raises(TimeoutError):  # no byte and no EOF: the socket stays open
        await asyncio.wait_for(reader.read(1), 0.5)
    await close(writer)
    assert classify(info.value) == "generic_timeout_error"


async def test_fin_is_a_clean_eof(web: WebServer, start_filter: StartFilter,
                                  public_ctx: ssl.SSLContext) -> None:
    """`fin` closes cleanly after the ClientHello: EOF (no errno), not a reset."""
    box = await start_filter(web.address("https"), {"vpn.demo": "fin"})
    with pytest.raises(ConnectionResetError) as info:  # asyncio's "Connection lost" on EOF
        await tls_connect(box.address, "vpn.demo", public_ctx)
    reader, writer = await asyncio.open_connection(*box.address)
    writer.write(client_hello("vpn.demo"))
    data = await asyncio.wait_for(reader.read(100), 2.0)  # raises if it were an RST
    await close(writer)
    assert (info.value.errno, classify(info.value), data) == (None, "eof_error", b"")


async def test_delay_holds_the_server_bytes(web: WebServer, start_filter: StartFilter,
                                            public_ctx: ssl.SSLContext) -> None:
    """`delay:0.5` lets the handshake complete, but no sooner than 0.5 s."""
    box = await start_filter(web.address("https"), {"vpn.demo": "delay:0.5"})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    _, writer = await tls_connect(box.address, "news.demo", public_ctx)
    fast = loop.time() - t0
    await close(writer)
    t0 = loop.time()
    status, _, body = split(await https_get(box.address, "vpn.demo", public_ctx))
    slow = loop.time() - t0
    assert (status, b"Free VPN" in body) == (200, True)
    assert slow >= 0.5 > fast


async def test_rate_caps_throughput(web: WebServer, start_filter: StartFilter) -> None:
    """`rate:N` delivers the whole body, at no more than about N bytes per second."""
    box = await start_filter(web.address("http"), {"small.demo": "rate:262144"})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _, body = split(await http_get(box.address, "small.demo"))
    elapsed = loop.time() - t0
    assert (status, len(body)) == (200, 256 * 1024)
    assert elapsed >= 0.9  # 256 KiB + headers at 256 KiB/s


async def test_http_host_is_filtered(web: WebServer, start_filter: StartFilter) -> None:
    """In front of plain HTTP the filter keys on the Host header."""
    box = await start_filter(web.address("http"), {"vpn.demo": "reset"})
    ok = split(await http_get(box.address, "news.demo"))
    with pytest.raises(ConnectionResetError) as info:
        await http_get(box.address, "vpn.demo")
    assert (ok[0], info.value.errno) == (200, errno.ECONNRESET)


async def test_divert_to_another_upstream(web: WebServer, start_filter: StartFilter) -> None:
    """`divert:ip:port` relays one name to a different upstream (e.g. a MITM box)."""
    dead = await start_filter(None, {})
    divert = f"divert:127.0.0.1:{web.address('http')[1]}"
    box = await start_filter(dead.address, {"news.demo": divert})
    status, _, _ = split(await http_get(box.address, "news.demo"))
    assert status == 200


async def test_silent_client_gets_default_after_peek_deadline(start_filter: StartFilter) -> None:
    """A client that sends nothing is judged by the default action once peek_timeout passes."""
    box = await start_filter(None, {}, default="fin", peek_timeout=0.2)
    reader, writer = await asyncio.open_connection(*box.address)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    data = await asyncio.wait_for(reader.read(10), 2.0)
    elapsed = loop.time() - t0
    await close(writer)
    assert data == b"" and 0.15 <= elapsed < 1.5
    assert [(s.protocol, s.name) for s in box.seen] == [("other", None)]


async def test_original_destination_without_nat_refuses(start_filter: StartFilter) -> None:
    """With upstream "original" and no iptables REDIRECT entry, the relay resets, never loops."""
    box = await start_filter("original", {})
    with pytest.raises(ConnectionResetError):
        await http_get(box.address, "news.demo")


async def test_rules_reload_and_stop_closes_connections(web: WebServer,
                                                        start_filter: StartFilter) -> None:
    """load_rules replaces the rules; stop() ends even a blackholed connection."""
    box = await start_filter(web.address("http"), {})
    box.load_rules({"default": "pass", "rules": {"*.demo": "blackhole"}})
    reader, writer = await asyncio.open_connection(*box.address)
    writer.write(b"GET / HTTP/1.1\r\nHost: news.demo\r\n\r\n")
    await asyncio.sleep(0.1)
    await asyncio.wait_for(box.stop(), 3.0)
    data = await asyncio.wait_for(reader.read(10), 2.0)
    await close(writer)
    assert data == b"" and [s.action for s in box.seen] == ["blackhole"]
