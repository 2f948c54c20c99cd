"""Real loopback servers for tests: the one DNS server (dnslib, UDP and TCP), HTTP(S)
(aiohttp + trustme), and TCP/TLS servers that misbehave the way censors and broken sites do.

Every server binds 127.0.0.1 on an ephemeral port and is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import trustme
from aiohttp import web
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord


class Query(NamedTuple):
    """One question a :class:`DnsServer` was asked, and over which wire."""

    name: str
    qtype: str
    proto: str


DnsReply = DNSRecord | bytes | None
DnsHandler = Callable[[DNSRecord, str], DnsReply]


def addresses(request: DNSRecord, ips: list[str]) -> DNSRecord:
    """A normal answer to ``request`` with A records for ``ips``, whatever it asked."""
    reply = request.reply()
    for ip in ips:
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=60))
    return reply


@dataclass
class DnsServer:
    """The tests' one DNS server: UDP and TCP on one port, answers changed at run time.

    ``zone`` maps a name (no trailing dot) to addresses; ``faults`` maps a name to
    ``nxdomain``/``servfail``/``refused``/``silent``/``no_answer``; ``handlers`` map a
    name to ``fn(request, "udp" | "tcp")`` returning a reply, raw wire bytes (to send
    broken packets) or None (silence; TCP closes). Every query is kept in ``queries``.
    ``tcp=False`` leaves TCP closed, as a resolver that only speaks UDP.
    """

    zone: dict[str, list[str]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    handlers: dict[str, DnsHandler] = field(default_factory=dict)
    tcp: bool = True
    port: int = 0
    queries: list[Query] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    stream: asyncio.Server | None = None

    def reply(self, data: bytes, proto: str = "udp") -> bytes | None:
        """The wire answer to one query, or None to stay silent."""
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(Query(name, str(QTYPE[request.q.qtype]), proto))
        handler = self.handlers.get(name)
        out = handler(request, proto) if handler else self.answer(request, name)
        return bytes(out.pack()) if isinstance(out, DNSRecord) else out

    def answer(self, request: DNSRecord, name: str) -> DNSRecord | None:
        """The zone's answer, bent by ``faults``."""
        fault = self.faults.get(name)
        response = request.reply()
        if fault == "silent":
            return None
        if fault in ("nxdomain", "servfail", "refused"):
            response.header.rcode = getattr(RCODE, fault.upper())
            return response
        if name not in self.zone and fault != "no_answer":
            response.header.rcode = RCODE.NXDOMAIN
            return response
        for address in [] if fault == "no_answer" else self.zone[name]:
            is_v6 = ":" in address
            if request.q.qtype == QTYPE.A and not is_v6:
                response.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))
            elif request.q.qtype == QTYPE.AAAA and is_v6:
                response.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=60))
        return response

    async def start(self) -> None:
        for _ in range(20):  # the UDP port may be taken on TCP; try another
            await self._bind_udp()
            try:
                if self.tcp:
                    self.stream = await asyncio.start_server(self._serve_tcp, "127.0.0.1",
                                                             self.port)
                return
            except OSError:
                self.close()
        raise OSError("no free UDP+TCP port pair")

    async def _bind_udp(self) -> None:
        server = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                out = server.reply(data, "udp")
                if out is not None and server.transport is not None:
                    server.transport.sendto(out, addr)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Protocol,
                                                           local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                out = self.reply(await reader.readexactly(size), "tcp")
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.stream is not None:
            self.stream.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class WebSite:
    """An aiohttp app served over HTTP and HTTPS on 127.0.0.1, counting requests."""

    ca: trustme.CA
    names: tuple[str, ...] = ("site.test",)
    http_port: int = 0
    https_port: int = 0
    hits: int = 0
    runner: web.AppRunner | None = None
    alt_svc: str | None = None  # an Alt-Svc header on every response (h3=":PORT": tests/http3)

    def app(self) -> web.Application:
        app = web.Application()
        site = self

        @web.middleware
        async def count(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
            site.hits += 1
            return await handler(request)  # type: ignore[no-any-return,misc]

        app.middlewares.append(count)

        @web.middleware
        async def advertise(request: web.Request,
                            handler: Callable[..., object]) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)  # type: ignore[misc]
            if site.alt_svc is not None and request.secure:
                response.headers["Alt-Svc"] = site.alt_svc
            return response

        app.middlewares.append(advertise)
        app.router.add_get("/", self.index)
        app.router.add_get("/redirect/{n}", self.redirect)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/big", self.big)
        app.router.add_get("/binary", self.binary)
        app.router.add_get("/slow", self.slow)
        return app

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><head><title>Welcome to the test site</title></head>"
                                 "<body>hello, world</body></html>", content_type="text/html")

    async def redirect(self, request: web.Request) -> web.Response:
        hops = int(request.match_info["n"])
        raise web.HTTPFound("/" if hops <= 1 else f"/redirect/{hops - 1}")

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (2 * 1024 * 1024), content_type="text/plain")

    async def binary(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xfe\x00binary\x80", content_type="application/octet-stream")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text="slow")

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*self.names, "127.0.0.1").configure_cert(ctx)
        http = web.TCPSite(self.runner, "127.0.0.1", 0)
        https = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await http.start()
        await https.start()
        self.http_port = _site_port(http)
        self.https_port = _site_port(https)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _site_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None
    return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


class RawServer:
    """A TCP server whose per-connection behaviour is a coroutine (for misbehaviour)."""

    def __init__(self, behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                           object]) -> None:
        self.behaviour = behaviour
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.behaviour(reader, writer)  # type: ignore[misc]
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.transport.abort()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def reset_socket(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends a real RST."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def reset_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What an SNI-filtering censor does: read the ClientHello, then RST."""
    await reader.read(1)
    reset_socket(writer)


async def fin_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A censor that closes cleanly (FIN) after the ClientHello."""
    await reader.read(1)
    writer.close()


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A blackhole: accept, read, never answer."""
    while await reader.read(65536):
        pass
    await asyncio.sleep(3600)


def refused_port() -> int:
    """A port nothing listens on (bound then closed, so the kernel answers RST to SYN)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``predicate()`` holds; for state other processes change."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the state lives in another task or process
            await asyncio.sleep(0.02)
