"""Hostile HTTP servers: every one ends in bounded time and memory with a failure string.

Each test measures a real loopback server through the engine, asserts the
recorded failure, the time (the deadline that should fire + SLACK) and the memory, and
then measures a normal site with the same engine.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import compression_utils

from kzprobe.engine import Engine, build_engine
from tests.hostile.conftest import HTTP_TIMEOUT, MEMORY_BOUND, RSS_BOUND, SLACK, Run, bounded
from tests.hostile.servers import (
    MIB,
    HostileServer,
    bomb_chunks,
    nested_gzip_bomb,
    read_request,
    respond,
    respond_forever,
    stream_body,
    trickle,
)
from tests.servers import DnsServer, WebSite

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
BODY_LIMIT = 512 * 1024  # limits.body_bytes default


@pytest.fixture(autouse=True)
def _names(dns_server: DnsServer) -> None:
    dns_server.zone["h.test"] = ["127.0.0.1"]


def _body_bytes(response: dict[str, Any]) -> bytes:
    body = response["body"]
    if isinstance(body, dict):
        return base64.b64decode(body["data"])
    return str(body).encode()


async def _measure(engine: Engine, server: HostileServer, name: str, scheme: str = "http"
                   ) -> Run:
    run = await bounded(engine, f"{scheme}://h.test:{server.port}/")
    run.report(name)
    return run


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
async def test_endless_body_is_cut_at_the_snapshot_cap(probe, hostile, still_works,
                                                       chunked: bool) -> None:
    """An endless body: limits.body_bytes are kept, marked truncated, no failure."""
    head = OK_HEAD + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n")
    piece = b"A" * 65536
    chunk = (lambda: b"10000\r\n" + piece + b"\r\n") if chunked else (lambda: piece)
    server = await hostile(respond_forever(head, chunk))
    engine = probe()
    run = await _measure(engine, server, f"endless body ({'chunked' if chunked else 'close'})")
    response = run.request["response"]
    assert run.request["failure"] is None
    assert len(_body_bytes(response)) == BODY_LIMIT
    assert response["body_is_truncated"] is True
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


def test_bomb_stream_is_a_valid_gibibyte_of_zeros() -> None:
    """The gzip bomb the tests serve is a valid stream of exactly 1 GiB, about 1 MiB long."""
    decoder = zlib.decompressobj(31)
    total = wire = 0
    for piece in bomb_chunks("gzip"):
        wire += len(piece)
        while piece:
            out = decoder.decompress(piece, 16 * MIB)
            total += len(out)
            assert not out.strip(b"\x00")
            piece = decoder.unconsumed_tail
    assert decoder.eof and not decoder.unused_data
    assert total == 1 << 30
    assert wire < 1100 * 1024


@pytest.mark.parametrize("encoding", ["deflate", "raw-deflate"])
def test_deflate_bomb_streams_are_valid(encoding: str) -> None:
    """The zlib-wrapped and raw deflate bombs decode (checked at 64 MiB: same construction)."""
    decoder = zlib.decompressobj(15 if encoding == "deflate" else -15)
    total = sum(len(decoder.decompress(piece)) for piece in bomb_chunks(encoding, 64))
    assert decoder.eof and total == 64 * MIB


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compression_bomb_is_decoded_only_up_to_the_cap(
        probe, hostile, still_works, encoding: str, chunked: bool) -> None:
    """1 GiB of zeros in ~1 MiB of gzip/deflate: decoded up to body_bytes, nothing more."""
    label = "deflate" if encoding == "raw-deflate" else encoding
    wire = sum(len(piece) for piece in bomb_chunks(encoding))
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % wire
    head = OK_HEAD + b"Content-Encoding: %s\r\n%s\r\n\r\n" % (label.encode(), framing)
    holder: list[HostileServer] = []
    server = await hostile(stream_body(head, lambda: bomb_chunks(encoding), holder,
                                       chunked=chunked))
    holder.append(server)
    engine = probe()
    run = await _measure(engine, server, f"{encoding} bomb ({'chunked' if chunked else 'length'})")
    response = run.request["response"]
    assert run.request["failure"] is None
    assert _body_bytes(response) == bytes(BODY_LIMIT)
    assert response["body_is_truncated"] is True
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    assert run.rss_growth < RSS_BOUND
    await still_works(engine)


async def test_nested_gzip_bomb_is_decoded_once(probe, hostile, still_works) -> None:
    """gzip(gzip(1 GiB)) in a few KiB: one layer is decoded (as browsers do), the rest kept raw."""
    bomb = nested_gzip_bomb()
    assert len(bomb) < 16 * 1024
    head = OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    server = await hostile(respond(head, bomb))
    engine = probe()
    run = await _measure(engine, server, "nested gzip bomb")
    body = _body_bytes(run.request["response"])
    assert run.request["failure"] is None
    assert body[:2] == b"\x1f\x8b"  # the inner gzip member, stored as received
    assert len(body) <= BODY_LIMIT
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


async def test_brotli_not_offered_is_an_invalid_response(probe, hostile, still_works) -> None:
    """`br` sent although kzprobe offers gzip, deflate: http_invalid_response, no crash."""
    if compression_utils.HAS_BROTLI:
        pytest.skip("a brotli decoder is installed: aiohttp decodes br (bounded like gzip)")
    body = bytes(range(256)) * 64
    head = OK_HEAD + b"Content-Encoding: br\r\nContent-Length: %d\r\n\r\n" % len(body)
    engine = probe()
    run = await _measure(engine, await hostile(respond(head, body)), "br not offered")
    assert run.keys["http_experiment_failure"] == "http_invalid_response"
    await still_works(engine)


async def test_garbage_declared_gzip_is_an_invalid_response(probe, hostile, still_works) -> None:
    """A body that does not decode as its Content-Encoding: http_invalid_response, not eof_error."""
    good = zlib.compress(b"hello" * 1000, wbits=31)
    head = OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % (len(good) + 100)
    server = await hostile(respond(head, good[:20], b"\xff" * 100))
    engine = probe()
    run = await _measure(engine, server, "bad gzip")
    assert run.keys["http_experiment_failure"] == "http_invalid_response"
    assert run.seconds < SLACK
    await still_works(engine)


async def test_malformed_chunk_after_the_headers_fails_at_once(probe, hostile,
                                                               still_works) -> None:
    """A garbage chunk-size line after the headers is http_invalid_response, not a timeout."""

    async def late_garbage(reader: Any, writer: Any) -> None:
        import asyncio

        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # the headers are parsed and handed over first
        writer.write(b"ZZZZ\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    engine = probe()
    run = await _measure(engine, await hostile(late_garbage), "malformed chunk")
    # Not a timeout: the failure string says so, and it came long before the 30 s the
    # server would otherwise have held the connection (a loose bound: a loaded CI machine).
    assert run.keys["http_experiment_failure"] == "http_invalid_response"
    assert run.seconds < 0.3 + SLACK
    await still_works(engine)


# --------------------------------------------------------------------------- slow servers


@pytest.mark.parametrize(
    ("name", "behaviour"),
    [
        ("body trickle 1 B/s", trickle(OK_HEAD + b"Content-Length: 100000\r\n\r\n", b"x")),
        ("headers trickle 1 B/s", trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: y\r\n")),
        ("silent after request", respond()),
        ("endless 103 responses", respond_forever(
            b"", lambda: b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")),
    ],
)
async def test_slow_servers_end_at_the_http_deadline(probe, hostile, still_works, name: str,
                                                     behaviour: Any) -> None:
    """Trickled bodies or headers, silence, endless 1xx: generic_timeout_error at timeouts.http."""
    engine = probe()
    run = await _measure(engine, await hostile(behaviour), name)
    assert run.request["failure"] == "generic_timeout_error"
    assert HTTP_TIMEOUT - 0.5 < run.seconds < HTTP_TIMEOUT + SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("path", ["/redirect/100", "/loop"])
async def test_redirect_chains_stop_at_max_redirects(probe, dns_server: DnsServer,
                                                     website: WebSite, still_works,
                                                     path: str) -> None:
    """100 redirects or a loop: 11 requests (limits.max_redirects = 10), then a failure."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    engine = probe()
    run = await bounded(engine, f"http://site.test:{website.http_port}{path}")
    run.report(f"redirects {path}")
    assert len(run.keys["requests"]) == 11
    assert run.keys["http_experiment_failure"] == "unknown_failure: stopped after 10 redirects"
    assert run.seconds < SLACK
    await still_works(engine)


@pytest.mark.parametrize("location", [b"ftp://h.test/file", b"javascript:alert(1)",
                                      b"file:///etc/passwd", b"data:text/html,hi",
                                      b"gopher://h.test:70/", b"http://[::1/"])
async def test_redirect_to_a_non_http_scheme_is_not_followed(
        probe, hostile, dns_server: DnsServer, still_works, location: bytes) -> None:
    """A Location that is not http(s): http_invalid_redirect_location_host, nothing dialled."""
    head = b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    server = await hostile(respond(head))
    engine = probe()
    run = await _measure(engine, server, f"redirect to {location.decode()[:12]}")
    assert run.keys["http_experiment_failure"] == "http_invalid_redirect_location_host"
    assert len(run.keys["requests"]) == 1 and server.connections == 1
    assert len(dns_server.queries) == 1
    await still_works(engine)


# --------------------------------------------------------------------------- header abuse


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("1 MiB header line", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n"),
        ("10,000 headers", b"HTTP/1.1 200 OK\r\n"
         + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n"),
        ("1 MiB status line", b"HTTP/1.1 200 " + b"O" * MIB + b"\r\n\r\n"),
    ],
)
async def test_oversized_headers_are_header_too_large(probe, hostile, still_works, name: str,
                                                      head: bytes) -> None:
    """Over aiohttp's limits (16 KiB per line or field, 128 headers): http_header_too_large."""
    engine = probe()
    run = await _measure(engine, await hostile(respond(head, b"hi")), name)
    assert run.keys["http_experiment_failure"] == "http_header_too_large"
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


async def test_invalid_utf8_is_kept_and_nul_in_body_is_base64(probe, hostile,
                                                              still_works) -> None:
    """Invalid UTF-8 in a header becomes U+FFFD; a body with NUL and bad UTF-8 is exact base64."""
    body = b"<html>\x00\xff\xfe\xc3(</html>"
    head = b"HTTP/1.1 200 OK\r\nX-Bad: caf\xc3\xa9 \xff\xfe\r\nContent-Length: %d\r\n\r\n" % len(
        body)
    engine = probe()
    run = await _measure(engine, await hostile(respond(head, body)), "invalid UTF-8 / NUL body")
    response = run.request["response"]
    assert run.request["failure"] is None
    assert response["headers"]["X-Bad"] == "café \ufffd\ufffd"
    assert response["body"]["format"] == "base64"
    assert _body_bytes(response) == body
    await still_works(engine)


@pytest.mark.parametrize(
    ("name", "behaviour"),
    [
        ("NUL in a header", respond(b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2"
                                    b"\r\n\r\nhi")),
        ("HTTP/0.9 response", respond(b"<html><title>0.9</title></html>", then=1.0)),
        ("binary garbage", respond(bytes(range(256)) * 4)),
        ("endless binary garbage", respond_forever(b"", lambda: b"\x8a\x00\xff" * 21845)),
        ("two Content-Lengths", respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                        b"Content-Length: 3\r\n\r\nabc")),
        ("status 999999", respond(b"HTTP/1.1 999999 WHAT\r\nContent-Length: 2\r\n\r\nab")),
    ],
)
async def test_malformed_responses_are_invalid_responses(probe, hostile, still_works, name: str,
                                                         behaviour: Any) -> None:
    """NUL in headers, HTTP/0.9, binary garbage on port 80: http_invalid_response, fast."""
    engine = probe()
    run = await _measure(engine, await hostile(behaviour), name)
    assert run.keys["http_experiment_failure"] == "http_invalid_response"
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


# --------------------------------------------------------------------------- over TLS


@pytest.mark.parametrize("name", ["gzip bomb", "endless body", "1 MiB header line"])
async def test_hostile_https_server_is_bounded_the_same_way(
        probe, hostile, still_works, ca, tmp_path, name: str) -> None:
    """The same abuse inside TLS (the GET rides the measured TLS connection) ends the same way."""
    from tests.hostile.servers import tls_context

    behaviours: dict[str, Callable[[], Any]] = {
        "gzip bomb": lambda: respond(OK_HEAD + b"Content-Encoding: gzip\r\n\r\n",
                                     *_first(bomb_chunks("gzip"), 64)),
        "endless body": lambda: respond_forever(OK_HEAD + b"\r\n", lambda: b"B" * 65536),
        "1 MiB header line": lambda: respond(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MIB + b"\r\n\r\n"),
    }
    server = await hostile(behaviours[name](), tls_context(ca, tmp_path, "h.test"))
    engine = probe()
    run = await _measure(engine, server, f"https {name}", scheme="https")
    assert run.keys["tls_handshakes"][0]["failure"] is None
    if name == "1 MiB header line":
        assert run.keys["http_experiment_failure"] == "http_header_too_large"
    else:
        assert run.request["response"]["body_is_truncated"] is True
        assert len(_body_bytes(run.request["response"])) == BODY_LIMIT
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine, https=True)


def _first(chunks: Iterator[bytes], count: int) -> list[bytes]:
    """The first ``count`` pieces of a bomb (64 MiB decoded: far over the cap)."""
    return [piece for _, piece in zip(range(count), chunks, strict=False)]


# --------------------------------------------------------------------------- the command


async def test_measure_command_survives_a_bomb_and_an_endless_body(
        hostile, dns_server: DnsServer, tmp_path) -> None:
    """`kzprobe measure` on a gzip bomb, an endless body and a trickle: exit 0, one record
    each, and the whole process stays far below the 1 GiB the bomb decodes to (typically
    ~65 MB; once 338 MB under heavy machine load, so the bound is 400 MB)."""
    import asyncio
    import json
    import sys

    wire = sum(len(piece) for piece in bomb_chunks("gzip"))
    holder: list[HostileServer] = []
    bomb = await hostile(stream_body(
        OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % wire,
        lambda: bomb_chunks("gzip"), holder))
    holder.append(bomb)
    endless = await hostile(respond_forever(OK_HEAD + b"\r\n", lambda: b"E" * 65536))
    slow = await hostile(trickle(OK_HEAD + b"Content-Length: 9999\r\n\r\n", b"s"))
    config = tmp_path / "c.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns_server.address}"]
query_aaaa = false
[analysis]
not_bogon = ["127.0.0.0/8"]
retries = 0
[timeouts]
http = {HTTP_TIMEOUT}
""")
    wrapper = "\n".join([
        "import resource, sys",
        "from kzprobe.cli import main",
        "try:",
        "    code = main(sys.argv[1:])",
        "finally:",
        "    usage = resource.getrusage(resource.RUSAGE_SELF)",
        "    print('maxrss_kib', usage.ru_maxrss, file=sys.stderr)",
        "sys.exit(code)",
    ])
    urls = [f"http://h.test:{server.port}/" for server in (bomb, endless, slow)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", wrapper, "measure", *urls, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = [json.loads(line) for line in out.splitlines()]
    failures = [r["test_keys"]["requests"][0]["failure"] for r in records]
    assert failures == [None, None, "generic_timeout_error"]
    assert all(r["test_keys"]["requests"][0]["response"]["body_is_truncated"]
               for r in records[:2])
    maxrss = int(err.decode().rsplit("maxrss_kib", 1)[1].split()[0]) * 1024
    print(f"\nBOUND kzprobe measure (bomb, endless, trickle): maxrss {maxrss / 1e6:.0f} MB")
    assert maxrss < 400 * 1024 * 1024


async def _under_uvloop() -> dict[str, str | None]:
    import asyncio

    from tests.conftest import make_config

    dns = DnsServer()
    await dns.start()
    dns.zone["h.test"] = ["127.0.0.1"]

    async def late_garbage(reader: Any, writer: Any) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"ZZZZ\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    behaviours = {
        "gzip bomb": respond(OK_HEAD + b"Content-Encoding: gzip\r\n\r\n",
                             *_first(bomb_chunks("gzip"), 64)),
        "endless body": respond_forever(OK_HEAD + b"\r\n", lambda: b"U" * 65536),
        "malformed chunk": late_garbage,
        "1 MiB header line": respond(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MIB + b"\r\n\r\n"),
    }
    engine = build_engine(make_config(dns=dns, analysis={"retries": 0}))
    found: dict[str, str | None] = {}
    try:
        for name, behaviour in behaviours.items():
            server = HostileServer(behaviour)
            await server.start()
            run = await bounded(engine, f"http://h.test:{server.port}/")
            assert run.seconds < SLACK and run.peak_bytes < MEMORY_BOUND
            found[name] = run.request["failure"]
            if name in ("gzip bomb", "endless body"):
                assert len(_body_bytes(run.request["response"])) == BODY_LIMIT
            await server.close()
    finally:
        await engine.aclose()
        dns.close()
    return found


def test_same_bounds_under_uvloop() -> None:
    """Under uvloop (the daemon's loop) bombs, endless bodies and garbage end the same way."""
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(_under_uvloop()) == {
        "gzip bomb": None, "endless body": None, "malformed chunk": "http_invalid_response",
        "1 MiB header line": "http_header_too_large"}
