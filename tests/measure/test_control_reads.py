"""The control protocol over a real path: messages arrive as many TCP segments, not one.

Every test here puts the segmenting relay (tests/relay.py) between the two ends, as a real
network does; over loopback alone a one-chunk read looks correct.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from kzprobe.config import Config, ControlHelper
from kzprobe.engine import build_engine
from kzprobe.helper import RunningHelper, start_helper
from kzprobe.measure.control import MAX_RESPONSE_BYTES, ControlClient
from kzprobe.targets import parse_target
from tests.helper.test_helper import ANY_PORT
from tests.relay import SegmentingRelay
from tests.servers import DnsServer, refused_port

# What a CDN-fronted page sends: a few KB of headers (cookies, CSP, tracing).
REALISTIC_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; " + "; ".join(
        f"script-src-elem https://cdn{i}.site.test/static/js/" for i in range(20))),
    *[("Set-Cookie", f"session{i}={'a1b2c3d4' * 12}; Path=/; Secure; HttpOnly; SameSite=Lax")
      for i in range(8)],
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains; preload"),
    ("Permissions-Policy", ", ".join(f"feature{i}=()" for i in range(40))),
    ("X-Request-Id", "f" * 64),
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
]


def th_response(size_hint: int = 6000) -> dict[str, Any]:
    """A THResponse as a real helper answers for a real site: several KB, mostly headers."""
    headers = {name: value for name, value in REALISTIC_HEADERS}
    filler = {f"X-Filler-{i}": "v" * 90 for i in range(size_hint // 100)}
    return {
        "tcp_connect": {"198.18.0.10:443": {"status": True, "failure": None}},
        "tls_handshake": {"198.18.0.10:443": {"server_name": "site.test", "status": True,
                                              "failure": None}},
        "quic_handshake": {},
        "http_request": {"body_length": 48213, "discovered_h3_endpoint": "", "failure": None,
                         "status_code": 200, "headers": {**headers, **filler},
                         "title": "Welcome to the test site"},
        "http3_request": None,
        "dns": {"failure": None, "addrs": ["198.18.0.10"]},
        "ip_info": {"198.18.0.10": {"asn": 0, "flags": 11}},
        "x_client_ip": "198.18.0.2",
    }


async def _serve(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@pytest.fixture
async def fake_helper() -> AsyncIterator[int]:
    """An aiohttp app speaking the helper's side: /ok, /endless, /trickle, /declared-huge."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=orjson.dumps(th_response()), content_type="application/json")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b" " * 65536  # JSON whitespace: valid as a prefix of any length
        while True:
            await resp.write(chunk)

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:
            await resp.write(b" ")
            await asyncio.sleep(0.1)

    async def declared_huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(MAX_RESPONSE_BYTES + 1)})
        await resp.prepare(request)
        await resp.write(b"{")
        await asyncio.sleep(30)
        return resp

    app = web.Application()
    for path, handler in (("/ok", ok), ("/endless", endless), ("/trickle", trickle),
                          ("/declared-huge", declared_huge)):
        app.router.add_post(path, handler)
    async for port in _serve(app):
        yield port


async def _query(url: str, timeout: float = 5.0) -> tuple[Any, float]:
    client = ControlClient([ControlHelper(url=url)], timeout=timeout)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await client.query("https://site.test/", ["198.18.0.10:443"])
    finally:
        await client.aclose()
    return result, loop.time() - started


async def test_control_response_in_segments_is_parsed(fake_helper: int) -> None:
    """A 6 KB THResponse delivered as 1,448-byte segments parses (a one-chunk read got the
    first segment only: json_parse_error, and every verdict on a real path was null)."""
    async with SegmentingRelay(fake_helper, segment=1448, pause=0.01) as relay:
        result, _ = await _query(relay.url(path="/ok"))
    assert result.failure is None
    assert result.response == th_response()
    assert relay.segments_down >= 4


async def test_control_response_over_the_cap_is_refused_without_buffering_it(
        fake_helper: int) -> None:
    """An endless response is refused once it passes MAX_RESPONSE_BYTES, long before the
    deadline: the client stops reading rather than buffering the stream."""
    result, elapsed = await _query(f"http://127.0.0.1:{fake_helper}/endless", timeout=20)
    assert result.failure == "http_request_failed"
    assert elapsed < 10


async def test_control_response_declared_over_the_cap_is_refused_at_once(
        fake_helper: int) -> None:
    """A Content-Length above the cap is refused from the headers alone."""
    result, elapsed = await _query(f"http://127.0.0.1:{fake_helper}/declared-huge", timeout=5)
    assert result.failure == "http_request_failed"
    assert elapsed < 2


async def test_control_deadline_applies_to_a_trickling_response(fake_helper: int) -> None:
    """A response that never ends, one byte per 0.1 s, ends at the control timeout."""
    result, elapsed = await _query(f"http://127.0.0.1:{fake_helper}/trickle", timeout=1.0)
    assert result.failure == "generic_timeout_error"
    assert 0.9 <= elapsed < 3


# --- the helper's side: THRequests that arrive in pieces -------------------------------

@pytest.fixture
async def helper_url(config_factory: Callable[..., Config], dns_server: DnsServer
                     ) -> AsyncIterator[Callable[..., Any]]:
    runners: list[RunningHelper] = []

    async def start(**helper: object) -> str:
        helper.setdefault("allow_nets", ["127.0.0.0/8"])
        config = config_factory(dns=dns_server, helper=helper)
        runner, url = await start_helper(replace(config, helper=replace(
            config.helper, listen="127.0.0.1:0", allowed_ports=ANY_PORT)))
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def th_request(size: int) -> bytes:
    """A THRequest of exactly ``size`` bytes, to a closed port (so it is measured quickly)."""
    request: dict[str, Any] = {"http_request": f"http://127.0.0.1:{refused_port()}/",
                               "http_request_headers": {"User-Agent": [""]},
                               "tcp_connect": [], "x_quic_enabled": False}
    pad = size - len(orjson.dumps(request))
    request["http_request_headers"]["User-Agent"] = ["M" * pad]
    body = orjson.dumps(request)
    assert len(body) == size
    return body


async def _raw_post(port: int, head_extra: bytes, parts: list[tuple[float, bytes]]
                    ) -> tuple[int, bytes]:
    """POST / with hand-made framing, each part sent after its delay; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(b"POST / HTTP/1.1\r\nHost: helper\r\nContent-Type: application/json\r\n"
                     + head_extra + b"\r\n")
        for delay, data in parts:
            await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.transport.abort()
    return int(head.split(b" ", 2)[1]), body


async def test_helper_reads_a_segmented_th_request_whole(helper_url) -> None:
    """A 1,672-byte THRequest through the relay is answered 200 (it got 400 "unexpected
    end of data": the helper parsed the first segment as the whole body)."""
    url = await helper_url()
    async with SegmentingRelay(_port(url), segment=1448, pause=0.02) as relay, \
            aiohttp.ClientSession() as session, \
            session.post(relay.url(), data=th_request(1672),
                         headers={"Content-Type": "application/json"}) as resp:
        status, th = resp.status, await resp.json(content_type=None)
    assert status == 200, th
    assert th["http_request"]["failure"] == "connection_refused_error"
    assert relay.segments_up >= 2


async def test_helper_waits_for_a_body_sent_after_the_headers(helper_url) -> None:
    """Headers first, the body 0.3 s later in two parts 0.3 s apart: the helper waits for
    all of it (it answered 400, parsing the first part as the whole body)."""
    url = await helper_url()
    body = th_request(600)
    status, answer = await _raw_post(_port(url), b"Content-Length: %d\r\n" % len(body),
                                     [(0.3, body[:300]), (0.3, body[300:])])
    assert status == 200, answer
    assert orjson.loads(answer)["http_request"]["failure"] == "connection_refused_error"


async def test_helper_refuses_a_chunked_body_over_the_cap(helper_url) -> None:
    """A chunked body (no Content-Length) growing past max_body_bytes is refused with 413
    as soon as it passes the cap, though its sender never stops."""
    url = await helper_url(max_body_bytes=2048, deadline=20.0)
    chunk = b"%x\r\n%s\r\n" % (1000, b" " * 1000)
    parts = [(0.0, b"%x\r\n{\r\n" % 1)] + [(0.01, chunk)] * 5
    started = asyncio.get_running_loop().time()
    status, _ = await _raw_post(_port(url), b"Transfer-Encoding: chunked\r\n", parts)
    assert status == 413
    assert asyncio.get_running_loop().time() - started < 5


async def test_helper_deadline_applies_to_a_trickling_body(helper_url) -> None:
    """A body trickled 10 bytes per 0.2 s ends at the deadline with 504, not earlier as a
    parse error of what arrived first."""
    url = await helper_url(deadline=1.0)
    body = th_request(600)
    parts = [(0.2, body[i:i + 10]) for i in range(0, 200, 10)]
    status, _ = await _raw_post(_port(url), b"Content-Length: %d\r\n" % len(body), parts)
    assert status == 504


async def test_probe_control_and_site_over_paced_paths(
        config_factory: Callable[..., Config], dns_server: DnsServer, helper_url) -> None:
    """End to end over paced paths: the probe and the helper both fetch a site with a few KB
    of realistic headers through a relay, and the probe's control goes through another
    relay. The control succeeds and the verdict says accessible."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html><head><title>Paced</title></head><body>"
                                 + "p" * 20_000 + "</body></html>",
                            content_type="text/html", headers=REALISTIC_HEADERS)

    app = web.Application()
    app.router.add_get("/", page)
    async for site_port in _serve(app):
        helper = await helper_url()
        async with SegmentingRelay(site_port, pause=0.002) as site, \
                SegmentingRelay(_port(helper), pause=0.005) as control:
            dns_server.zone["paced.test"] = ["127.0.0.1"]
            engine = build_engine(config_factory(dns=dns_server,
                                                 control={"helper_url": [control.url()]}))
            try:
                record = await engine.measure(parse_target(f"http://paced.test:{site.port}/"))
            finally:
                await engine.aclose()
    keys = record["test_keys"]
    assert keys["control_failure"] is None
    assert keys["control"]["http_request"]["status_code"] == 200
    response = keys["requests"][0]["response"]
    assert response["code"] == 200 and response["body_is_truncated"] is False
    assert response["body"].endswith("p" * 20_000 + "</body></html>")  # the whole page
    assert keys["accessible"] is True and keys["blocking"] is False
    assert site.segments_down >= 2 * 10 and control.segments_down >= 2  # both paths were paced
