"""HTTP/3 in the simulated internet: an aioquic server for the HTTP/3 sites, and a UDP
filter that drops a censored site's QUIC while its TCP passes.

:class:`H3Server` serves ``page`` sites over QUIC on one UDP address, certificate from the
public CA (the HTTPS server advertises it with ``Alt-Svc: h3=":PORT"``).
:class:`UdpDrop` relays datagrams to it from exempt sources (the control vantage) and
silently drops everyone else's: what an ISP blocking QUIC does (Russia's TSPU, IMC 2022).
Both are bounded: flows relayed, streams answered, bytes per response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from kzprobe.simnet.common import HostPort, Service, format_hostport, normalize_name
from kzprobe.simnet.pki import PublicCA
from kzprobe.simnet.web import SERVER_HEADER, Site, render_page

MAX_FLOWS = 256  # clients a UdpDrop relays at once


class _Handler(QuicConnectionProtocol):
    def __init__(self, *args: Any, pages: dict[str, bytes], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages = pages
        self.h3 = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._respond(h3_event.stream_id, dict(h3_event.headers))

    def _respond(self, stream_id: int, headers: dict[bytes, bytes]) -> None:
        name = headers.get(b":authority", b"").decode("ascii", "replace").rsplit(":", 1)[0]
        path = headers.get(b":path", b"/")
        page = self.pages.get(normalize_name(name)) if path in (b"/", b"/index.html") else None
        status = b"200" if page is not None else b"404"
        self.h3.send_headers(stream_id, [(b":status", status), (b"server", SERVER_HEADER.encode()),
                                         (b"content-type", b"text/html; charset=utf-8")])
        self.h3.send_data(stream_id, page or b"not found", end_stream=True)
        self.transmit()


class H3Server(Service):
    """``page`` sites over HTTP/3 on ``host:port`` (UDP)."""

    def __init__(self, host: str, port: int, sites: Iterable[Site], *, ca: PublicCA) -> None:
        self.host, self.port = host, port
        self.pages = {normalize_name(s.name): render_page(s).encode() for s in sites
                      if s.kind == "page"}
        self.ca = ca
        self._server: QuicServer | None = None

    async def start(self) -> None:
        leaf = self.ca.issue(*self.pages, self.host)
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        config.private_key = load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        pages = self.pages

        def protocol(*args: Any, **kwargs: Any) -> _Handler:
            return _Handler(*args, pages=pages, **kwargs)

        self._server = await serve(self.host, self.port, configuration=config,
                                   create_protocol=protocol)

    async def stop(self) -> None:
        if self._server is not None:
            server: Any = self._server  # close() is untyped in aioquic 0.9, typed in 1.x
            server.close()
            self._server = None

    def addresses(self) -> dict[str, str]:
        return {"udp": format_hostport((self.host, self.port))}


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, front: asyncio.DatagramTransport, client: Any) -> None:
        self.front, self.client = front, client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.front.is_closing():
            self.front.sendto(data, self.client)


class UdpDrop(Service, asyncio.DatagramProtocol):
    """Relays datagrams to ``upstream`` for ``exempt`` sources; drops the rest."""

    def __init__(self, listen: HostPort, upstream: HostPort, *,
                 exempt: frozenset[str] = frozenset()) -> None:
        self.listen, self.upstream, self.exempt = listen, upstream, exempt
        self.front: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, asyncio.DatagramTransport] = {}
        self.dropped = 0
        self._opening: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=self.listen)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr[0] not in self.exempt:
            self.dropped += 1
            return
        flow = self.flows.get(addr)
        if flow is not None:
            flow.sendto(data)
        elif len(self.flows) + len(self._opening) < MAX_FLOWS and self.front is not None:
            task = asyncio.ensure_future(self._open(addr, data, self.front))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, client: Any, first: bytes, front: asyncio.DatagramTransport) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(front, client), remote_addr=self.upstream)
        self.flows[client] = transport
        transport.sendto(first)

    async def stop(self) -> None:
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()
        if self.front is not None:
            self.front.close()
            self.front = None

    def addresses(self) -> dict[str, str]:
        return {"udp": format_hostport(self.listen)}
