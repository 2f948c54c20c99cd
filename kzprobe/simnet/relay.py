"""Byte relays and the ways a middlebox ends a connection (RST, FIN, silence).

Every read is bounded in size and time, every write waits for the peer to drain
(so buffers stay bounded), and the three endings are distinct on the wire, because
the probe under test must tell them apart: ``abort_with_rst`` sends a TCP RST
(SO_LINGER 0), ``close_with_fin`` a clean FIN, ``swallow`` nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Shaping:
    """How to slow the server-to-client direction: hold it, then cap its rate."""

    delay: float = 0.0  # seconds after the connection started before any byte goes down
    rate: float | None = None  # bytes per second, long-run average


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_with_fin(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                         linger: float = 1.0) -> None:
    """Send FIN, then read briefly so unread client bytes do not turn the close into RST."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(linger):
            while await reader.read(CHUNK):
                pass
    except (OSError, TimeoutError):
        pass
    writer.close()


async def swallow(reader: asyncio.StreamReader, limit: float) -> None:
    """Read and discard everything, never answer, until the peer leaves or ``limit`` passes."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(limit):
            while await reader.read(CHUNK):
                pass


async def close_quietly(writer: asyncio.StreamWriter, timeout: float = 1.0) -> None:
    """Close and wait (bounded) for the transport to go; errors are irrelevant here."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), timeout)


class Activity:
    """When either direction of a relay last moved a byte: one quiet direction is not idle."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()

    async def read(self, reader: asyncio.StreamReader, size: int, idle: float) -> bytes:
        """Read, timing out only when neither direction has moved for ``idle`` seconds."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(size), max(0.01, self.last + idle
                                                                     - loop.time()))
            except TimeoutError:
                if loop.time() - self.last >= idle:
                    raise
                continue
            self.touch()
            return data


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, idle: float,
               activity: Activity | None = None, shaping: Shaping | None = None,
               started: float = 0.0) -> None:
    """Copy until EOF, then half-close ``writer`` (or close it if it cannot half-close)."""
    loop = asyncio.get_running_loop()
    activity = activity or Activity()
    sent, first_due = 0, started + (shaping.delay if shaping else 0.0)
    rate = shaping.rate if shaping else None
    size = CHUNK if not rate else max(1, min(CHUNK, int(rate / 10)))
    while data := await activity.read(reader, size, idle):
        due = first_due if rate is None else first_due + sent / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        writer.write(data)
        sent += len(data)
        await asyncio.wait_for(writer.drain(), idle)
        activity.touch()
    if writer.can_write_eof():
        writer.write_eof()
    else:
        writer.close()


async def relay(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                server: tuple[asyncio.StreamReader, asyncio.StreamWriter], *,
                idle: float, shaping: Shaping | None = None, started: float = 0.0) -> None:
    """Relay both directions until both reach EOF; any error or idle timeout aborts both."""
    (c_reader, c_writer), (s_reader, s_writer) = client, server
    activity = Activity()
    up = asyncio.ensure_future(pipe(c_reader, s_writer, idle=idle, activity=activity))
    down = asyncio.ensure_future(pipe(s_reader, c_writer, idle=idle, activity=activity,
                                      shaping=shaping, started=started))
    try:
        done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_EXCEPTION)
        failed = any(not t.cancelled() and t.exception() is not None for t in done)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    if failed:
        c_writer.transport.abort()
        s_writer.transport.abort()
    else:
        await close_quietly(c_writer)
        await close_quietly(s_writer)
