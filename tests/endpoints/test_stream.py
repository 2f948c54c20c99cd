"""kzprobe.measure.steps.stream: request/reply on a measured connection, bounded and deadlined."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kzprobe.measure.context import Stopwatch, close_transport
from kzprobe.measure.steps import tcp
from kzprobe.measure.steps.stream import StreamExchange, StreamProtocol, request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _four(buffer: bytes) -> int | None:
    return 4 if len(buffer) >= 4 else None


async def _exchange(handler: Handler, complete: Callable[[bytes], int | None] = _four,
                    timeout: float = 1.0) -> StreamExchange:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        clock = Stopwatch()
        _, transport, held = await tcp.connect("127.0.0.1", port, timeout=2.0, clock=clock)
        assert transport is not None and held is not None
        try:
            stream = StreamProtocol.adopt(transport, held)
            return await request(transport, stream, b"ping", complete=complete,
                                 timeout=timeout, clock=clock, address=f"127.0.0.1:{port}")
        finally:
            await close_transport(transport)


async def test_reply_in_pieces_is_reassembled() -> None:
    """A reply split over several segments is returned whole, with write and read events."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        for piece in (b"po", b"ng"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

    result = await _exchange(handler)
    assert result.failure is None and result.reply == b"pong"
    assert [e.operation for e in result.events] == ["write", "read"]


async def test_fin_before_a_complete_reply_is_eof() -> None:
    """The peer closes mid-reply: eof_error."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"po")
        await writer.drain()
        writer.close()

    result = await _exchange(handler)
    assert result.failure == "eof_error" and result.events[-1].num_bytes == 2


async def test_silence_is_a_timeout() -> None:
    """No reply within the deadline: generic_timeout_error."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)

    assert (await _exchange(handler, timeout=0.3)).failure == "generic_timeout_error"


async def test_endless_reply_is_bounded() -> None:
    """A peer streaming bytes that never complete a reply is cut at the read limit."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()

    result = await _exchange(handler, complete=lambda b: None, timeout=3.0)
    assert result.failure is not None and "ReplyTooLarge" in result.failure
