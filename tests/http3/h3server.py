"""An HTTP/3 server on 127.0.0.1 built with aioquic (trustme certificate), and a silent UDP
port: a QUIC server that never finishes the handshake.

Any path gets the test site's page, except with the query ``?endless``: a body that never
ends (a chunk per tick, until the client goes away or :data:`ENDLESS_CAP` bytes), and
``?close``: a connection closed before any response. (Queries, so that the HTTPS site
serves its page, with the Alt-Svc, at the same URL.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

INDEX = (b"<html><head><title>Welcome to the test site</title></head>"
         b"<body>hello, world</body></html>")
ENDLESS_CAP = 64 * 1024 * 1024  # the test server itself stays bounded
CHUNK = 16 * 1024


class _Handler(QuicConnectionProtocol):
    def __init__(self, *args: Any, server: H3Server, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.h3 = H3Connection(self._quic)
        self.tasks: set[asyncio.Task[None]] = set()

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                headers = dict(h3_event.headers)
                self.server.hits += 1
                task = asyncio.ensure_future(
                    self._respond(h3_event.stream_id, headers.get(b":path", b"/")))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _respond(self, stream_id: int, path: bytes) -> None:
        mode = path.partition(b"?")[2]
        if mode == b"close":
            self._quic.close(error_code=0x100, reason_phrase="bye")  # H3_NO_ERROR, no response
            self.transmit()
            return
        self.h3.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"text/html"),
                                         (b"server", b"h3-test")])
        if mode != b"endless":
            self.h3.send_data(stream_id, INDEX, end_stream=True)
            self.transmit()
            return
        sent = 0
        while sent < ENDLESS_CAP and not self._closed.is_set():
            self.h3.send_data(stream_id, b"x" * CHUNK, end_stream=False)
            self.transmit()
            sent += CHUNK
            await asyncio.sleep(0.002)


@dataclass
class H3Server:
    """aioquic's server on 127.0.0.1:<ephemeral UDP port>, counting requests."""

    ca: trustme.CA
    tmp: Path
    names: tuple[str, ...] = ("site.test",)
    port: int = 0
    hits: int = 0
    _server: QuicServer | None = field(default=None, repr=False)

    async def start(self) -> None:
        cert, key = self.tmp / "h3-cert.pem", self.tmp / "h3-key.pem"
        leaf = self.ca.issue_cert(*self.names, "127.0.0.1")
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(cert, key)
        server = self

        def protocol(*args: Any, **kwargs: Any) -> _Handler:
            return _Handler(*args, server=server, **kwargs)

        self._server = await serve("127.0.0.1", 0, configuration=config,
                                   create_protocol=protocol)
        self.port = self._server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


class SilentUdp(asyncio.DatagramProtocol):
    """Reads every datagram and answers none: a handshake that never finishes."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


async def silent_udp() -> tuple[asyncio.DatagramTransport, SilentUdp, int]:
    """A bound UDP port on 127.0.0.1 that swallows datagrams: (transport, protocol, port)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(SilentUdp,
                                                           local_addr=("127.0.0.1", 0))
    return transport, proto, int(transport.get_extra_info("sockname")[1])


def closed_udp_port() -> int:
    """A UDP port on 127.0.0.1 with nobody bound to it (ICMP port unreachable)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
