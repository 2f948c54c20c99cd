"""DNS over TLS (RFC 7858) in front of a simnet :class:`~kzprobe.simnet.dns.DnsServer`:
the demo's encrypted resolver, in pure Python (the demo needs no unbound).

Each TLS connection carries length-prefixed queries, answered by the DNS server's
``respond`` as if they had come over TCP; an idle connection is closed after
``idle_timeout``, and at most ``max_connections`` are served at once.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

from kzprobe.simnet.common import (
    HostPort,
    OneAddress,
    Service,
    TaskTracker,
    bind_tcp,
    close_server,
    format_hostport,
    sock_address,
)
from kzprobe.simnet.dns import DnsServer


class DotServer(OneAddress, Service):
    """DoT on ``listen`` with ``context``'s certificate, answering from ``dns``."""

    def __init__(self, listen: HostPort, dns: DnsServer, context: ssl.SSLContext, *,
                 idle_timeout: float = 10.0, max_connections: int = 64) -> None:
        self.listen, self.dns, self.context = listen, dns, context
        self.idle_timeout = idle_timeout
        self._tracker = TaskTracker(max_connections)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = bind_tcp(*self.listen)
        self._address = sock_address(sock)
        self._server = await asyncio.start_server(self._handle, sock=sock, ssl=self.context,
                                                  ssl_handshake_timeout=self.idle_timeout)

    async def stop(self) -> None:
        await close_server(self._server, self._tracker)
        self._server = None

    def addresses(self) -> dict[str, str]:
        return {"dot": format_hostport(self.address)}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tracker.full:
            writer.close()
            return
        self._tracker.add_current()
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                reply = await self.dns.respond(data, "tcp")
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # top frame of the handler task: see SniFilter._handle
        finally:
            writer.close()
