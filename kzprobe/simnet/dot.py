"""DNS over TLS (RFC 7858) in front of a simnet :class:`~kzprobe.simnet.dns.DnsServer`:
the demo's encrypted resolver, in pure Python (the demo needs no unbound).

Each TLS connection carries length-prefixed queries, answered by the DNS server's
``respond`` as if they had come over TCP; an idle connection is closed after
``idle_timeout``, and at most ``max_connections`` are served at once.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from kzprobe.simnet.common import HostPort
from kzprobe.simnet.dns import DnsServer, serve_stream
from kzprobe.simnet.stream import StreamService


class DotServer(StreamService):
    """DoT on ``listen`` with ``context``'s certificate, answering from ``dns``."""

    address_role = "dot"

    def __init__(self, listen: HostPort, dns: DnsServer, context: ssl.SSLContext, *,
                 idle_timeout: float = 10.0, max_connections: int = 64) -> None:
        super().__init__(listen, max_connections)
        self.dns, self.context = dns, context
        self.idle_timeout = idle_timeout

    def _server_options(self) -> dict[str, Any]:
        return {"ssl": self.context, "ssl_handshake_timeout": self.idle_timeout}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tracker.full:
            writer.close()
            return
        self._tracker.add_current()
        await serve_stream(reader, writer, self.dns.respond, self.idle_timeout)
