"""The segmenting relay (tests/relay.py) really splits and paces, both ways, and closes."""

from __future__ import annotations

import asyncio

from tests.relay import SegmentingRelay


class _Recorder(asyncio.Protocol):
    """Records the size of every recv() the kernel hands the event loop."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.chunks: list[int] = []
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.reply:
            self.transport.write(self.reply)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(len(data))

    def eof_received(self) -> bool:
        return False  # the peer is done: close our side too (after flushing any reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def test_relay_splits_and_paces_both_directions() -> None:
    """10 KB each way through 1,000-byte segments: the upstream and the client each see
    several recv() calls of at most 1,000 bytes, spread over the pauses; then both close."""
    loop = asyncio.get_running_loop()
    upstreams: list[_Recorder] = []

    def upstream() -> _Recorder:
        upstreams.append(_Recorder(reply=b"d" * 10_000))
        return upstreams[-1]

    server = await loop.create_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with SegmentingRelay(port, segment=1000, pause=0.01) as relay:
            started = loop.time()
            transport, client = await loop.create_connection(_Recorder, "127.0.0.1", relay.port)
            transport.write(b"u" * 10_000)
            transport.write_eof()
            await asyncio.wait_for(client.closed, 5)
            elapsed = loop.time() - started
            await asyncio.wait_for(upstreams[0].closed, 5)
    finally:
        server.close()
    up, down = upstreams[0].chunks, client.chunks
    assert sum(up) == 10_000 and sum(down) == 10_000
    assert len(up) >= 5 and max(up) <= 1000
    assert len(down) >= 5 and max(down) <= 1000
    assert relay.segments_up == 10 and relay.segments_down == 10
    assert elapsed >= 9 * 0.01


async def test_relay_hold_delays_the_first_byte() -> None:
    """With ``hold`` the peer's first read waits: a message is not there when a reader looks."""
    loop = asyncio.get_running_loop()
    got: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        got.append(loop.time())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async with SegmentingRelay(server.sockets[0].getsockname()[1], hold=0.3) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            sent = loop.time()
            writer.write(b"x")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
    finally:
        server.close()
    assert got and got[0] - sent >= 0.29


async def test_relay_with_refused_upstream_closes_the_client() -> None:
    """Nothing upstream: the client's connection is closed, not left hanging."""
    from tests.servers import refused_port

    async with SegmentingRelay(refused_port()) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""
        writer.close()
    assert data == b""


async def test_relay_passes_a_reset_on_as_a_reset() -> None:
    """An upstream RST reaches the client as an RST (ECONNRESET), not as a clean EOF."""
    from tests.servers import reset_socket

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        reset_socket(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async with SegmentingRelay(server.sockets[0].getsockname()[1]) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"x")
            try:
                await asyncio.wait_for(reader.read(), 5)
                ending = "eof"
            except ConnectionResetError:
                ending = "reset"
            writer.close()
    finally:
        server.close()
    assert ending == "reset"
