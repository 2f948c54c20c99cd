"""A segmenting, pacing TCP relay: what a real path does to a message that loopback does not.

Over loopback a few-KB message arrives in one ``recv()``, so code that reads one chunk and
treats it as the whole message passes every loopback test and fails on every real path,
where the same message arrives as ~1,448-byte segments spread over milliseconds. This
relay listens on 127.0.0.1 (port 0), forwards to an upstream, and in both directions cuts
the stream into ``segment``-byte pieces sent separately (TCP_NODELAY) with ``pause``
seconds between them. ``hold`` delays the first byte of each direction, so a peer's first
read finds nothing. Buffers are bounded (one segment in flight per direction; reads stop
while the far side does not drain) and every connection ends with its peer's ending: EOF
is passed on as a half-close (FIN), a reset or error as a reset (RST).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from kzprobe.simnet.relay import Activity, abort_with_rst


@dataclass
class SegmentingRelay:
    """``async with SegmentingRelay(port) as relay``: clients connect to ``relay.port``."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    segment: int = 1448  # bytes per write, at most (a typical MSS)
    pause: float = 0.005  # seconds between two writes of one direction
    hold: float = 0.0  # seconds before the first byte of each direction goes out
    idle: float = 30.0  # a connection with no byte either way for this long is aborted
    port: int = 0
    segments_up: int = 0  # client -> upstream writes, over all connections
    segments_down: int = 0  # upstream -> client writes
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> SegmentingRelay:
        if self.segment < 1:
            raise ValueError("segment must be at least 1 byte")
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0,
                                                  limit=max(self.segment, 1024))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> SegmentingRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def url(self, scheme: str = "http", path: str = "/") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:  # close(): end here, since on 3.11 asyncio's own
            writer.transport.abort()  # callback raises on a cancelled handler task
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                self.upstream_host, self.upstream_port, limit=max(self.segment, 1024)), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        _nodelay(up_writer)
        clock = Activity()
        pumps = (asyncio.ensure_future(self._pump(reader, up_writer, clock, up=True)),
                 asyncio.ensure_future(self._pump(up_reader, writer, clock, up=False)))
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(not t.cancelled() and t.exception() is not None for t in done)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        for end in (writer, up_writer):
            if failed:  # a reset (or idle timeout) on one side is a reset on the other
                abort_with_rst(end)
            else:
                end.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(end.wait_closed(), 2)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    clock: Activity, *, up: bool) -> None:
        """Copy one direction segment by segment, then pass the EOF on (half-close)."""
        first = True
        while data := await clock.read(reader, self.segment, self.idle):
            if first and self.hold:
                await asyncio.sleep(self.hold)
            elif not first and self.pause:
                await asyncio.sleep(self.pause)
            first = False
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.idle)
            clock.touch()
            if up:
                self.segments_up += 1
            else:
                self.segments_down += 1
        if writer.can_write_eof():
            writer.write_eof()



def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
