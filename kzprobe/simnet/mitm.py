"""A TLS interception box: the real page behind a government certificate.

It terminates every TLS connection with a leaf minted for the client's SNI by the
Qaznet chain (leaf + "Security Certificate" intermediate, as in Kazakhstan in 2019),
opens its own TLS connection to the real site (verifying it against the public CA and
the same SNI), and relays the decrypted bytes both ways. A client that trusts only the
public web PKI fails with "unable to get local issuer certificate"; one that has
installed the Qaznet root sees the real page.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import weakref
from dataclasses import dataclass
from typing import Any

from kzprobe.simnet import relay
from kzprobe.simnet.common import HostPort, original_destination
from kzprobe.simnet.pki import ALPN, QaznetChain, context_from_pem
from kzprobe.simnet.sni_filter import Upstream
from kzprobe.simnet.stream import StreamService


@dataclass(frozen=True, slots=True)
class Intercepted:
    """One intercepted connection: the SNI and whether the real site was reached."""

    name: str | None
    upstream_ok: bool


class MitmBox(StreamService):
    """TLS terminator + re-encrypting relay; ``upstream="original"`` uses SO_ORIGINAL_DST."""

    address_role = "tls"

    def __init__(self, listen: HostPort, upstream: Upstream, chain: QaznetChain, *,
                 upstream_ca: bytes, default_name: str = "localhost",
                 handshake_timeout: float = 5.0, connect_timeout: float = 5.0,
                 idle_timeout: float = 30.0, max_connections: int = 512) -> None:
        super().__init__(listen, max_connections)
        self.upstream, self.chain = upstream, chain
        self.default_name = default_name
        self.handshake_timeout, self.connect_timeout = handshake_timeout, connect_timeout
        self.idle_timeout = idle_timeout
        self.seen: collections.deque[Intercepted] = collections.deque(maxlen=1024)
        self._upstream_ctx = ssl.create_default_context(cadata=upstream_ca.decode("ascii"))
        self._upstream_ctx.set_alpn_protocols(ALPN)
        self._names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

    def _server_options(self) -> dict[str, Any]:
        return {"ssl": self._server_context(), "ssl_handshake_timeout": self.handshake_timeout}

    def _server_context(self) -> ssl.SSLContext:
        """Its own context object (it gets the callback), serving the default leaf without SNI."""
        ctx = context_from_pem(self.chain.chain_pem(self.default_name), self.chain.leaf_key_pem)
        ctx.sni_callback = self._choose
        return ctx

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None,
                _: ssl.SSLContext) -> None:
        """Mint (or reuse) a leaf for the SNI and remember the SNI for the relay."""
        if server_name:
            try:
                sslobj.context = self.chain.server_context(server_name)
            except (ValueError, ssl.SSLError):
                pass  # an unmintable name keeps the default leaf
            self._names[sslobj] = server_name
        return None

    def _target(self, writer: asyncio.StreamWriter) -> HostPort | None:
        if self.upstream == "original":
            target = original_destination(writer.get_extra_info("socket"))
            return None if target == self._address else target
        return self.upstream

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tracker.add_current()
        name = self._names.get(writer.get_extra_info("ssl_object"))
        try:
            upstream = await self._connect_upstream(writer, name)
            self.seen.append(Intercepted(name, upstream is not None))
            if upstream is not None:
                await relay.relay((reader, writer), upstream, idle=self.idle_timeout)
        except (Exception, asyncio.CancelledError):  # top frame: see SniFilter._handle
            writer.transport.abort()
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _connect_upstream(self, writer: asyncio.StreamWriter, name: str | None
                                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        target = self._target(writer)
        if target is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.open_connection(
                *target, ssl=self._upstream_ctx, server_hostname=name or self.default_name,
                ssl_handshake_timeout=self.connect_timeout, limit=relay.CHUNK),
                self.connect_timeout)
        except (OSError, TimeoutError):
            return None
