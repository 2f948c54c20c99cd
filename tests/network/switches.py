"""Loopback servers the monitor tests switch on and off, or slow down, mid-run."""

from __future__ import annotations

import asyncio
import contextlib

HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" \
        b"Connection: close\r\n\r\n{}"
PAGE = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 37\r\n" \
       b"Connection: close\r\n\r\n<html><title>anchor</title>ok</html>\n"


class Switch:
    """A TCP listener on a fixed 127.0.0.1 port that can be turned off (connections
    refused) and on again; while on it answers every request with ``reply`` after
    ``delay`` seconds."""

    def __init__(self, reply: bytes = PAGE) -> None:
        self.reply = reply
        self.delay = 0.0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def on(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                     reuse_address=True)
            self.port = self.server.sockets[0].getsockname()[1]

    async def off(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(10):
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(self.delay)
                writer.write(self.reply)
                await writer.drain()
        writer.transport.abort()


class Relay(Switch):
    """A switchable TCP relay on a fixed 127.0.0.1 port to ``upstream`` (a real server, such
    as a control helper): off, the upstream is unreachable through it (refused)."""

    def __init__(self, upstream: int) -> None:
        super().__init__()
        self.upstream = upstream
        self.open: set[asyncio.StreamWriter] = set()

    async def off(self) -> None:
        """Refuse new connections and cut the open ones (keep-alive ones too)."""
        for writer in list(self.open):
            writer.transport.abort()
        await super().off()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open.add(writer)
        try:
            await self._relay(reader, writer)
        finally:
            self.open.discard(writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for end in (writer, up_writer):
            end.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
