"""The lifecycle shared by simnet's stream services (SNI filter, MITM box, DoT server).

Each listens on one TCP socket, tracks its handler tasks within a connection limit, and
closes them all on stop; a subclass supplies the handler and its ``start_server`` options
(TLS context, read limit). The READY line names the address under ``address_role``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

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


class StreamService(OneAddress, Service):
    """A service on one listening TCP socket, with at most ``max_connections`` handlers."""

    address_role: ClassVar[str] = "tcp"

    def __init__(self, listen: HostPort, max_connections: int) -> None:
        self.listen = listen
        self._tracker = TaskTracker(max_connections)
        self._server: asyncio.AbstractServer | None = None
        self._address: HostPort | None = None

    async def start(self) -> None:
        sock = bind_tcp(*self.listen)
        self._address = sock_address(sock)
        self._server = await asyncio.start_server(self._handle, sock=sock,
                                                  **self._server_options())

    async def stop(self) -> None:
        await close_server(self._server, self._tracker)
        self._server = None

    def addresses(self) -> dict[str, str]:
        return {self.address_role: format_hostport(self.address)}

    def _server_options(self) -> dict[str, Any]:
        """Extra keyword arguments of ``asyncio.start_server`` (``ssl=``, ``limit=``)."""
        return {}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
