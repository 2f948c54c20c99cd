"""Hostile loopback servers: the worst of the internet, in a few lines each.

Raw HTTP behaviours are coroutines over a stream pair (plain TCP or TLS), served by
:class:`HostileServer` (hostile DNS is :class:`tests.servers.DnsServer` with handlers);
the bomb and certificate builders stream or mint what the servers send. Every server
binds 127.0.0.1 on an ephemeral port and is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MIB = 1 << 20


class HostileServer:
    """A TCP (or TLS) server whose connections each run one hostile behaviour."""

    def __init__(self, behaviour: Behaviour, ssl_context: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.sent = 0  # bytes the behaviour handed to the transport (see send())

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.behaviour(reader, writer)
            except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ssl.SSLError):
                pass
            finally:
                writer.transport.abort()

        tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": 5} if self.ssl_context else {}
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, **tls)  # type: ignore[arg-type]
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head (a GET has no body); bounded by the stream's 64 KiB limit."""
    return await reader.readuntil(b"\r\n\r\n")


def respond(*chunks: bytes, then: float = 30.0) -> Behaviour:
    """Send fixed bytes after the request, then hold the connection ``then`` seconds."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        await asyncio.sleep(then)
    return behaviour


def respond_forever(head: bytes, chunk: Callable[[], bytes]) -> Behaviour:
    """Send ``head``, then ``chunk()`` again and again until the client goes away."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        while not writer.is_closing():
            writer.write(chunk())
            await writer.drain()
    return behaviour


def trickle(head: bytes, drip: bytes, *, interval: float = 1.0) -> Behaviour:
    """Send ``head``, then one byte of ``drip`` (cycled) every ``interval`` seconds."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        for index in range(3600):
            writer.write(drip[index % len(drip):][:1])
            await writer.drain()
            await asyncio.sleep(interval)
    return behaviour


def stream_body(head: bytes, chunks: Callable[[], Iterator[bytes]], server: list[HostileServer],
                *, chunked: bool = False) -> Behaviour:
    """Send ``head`` and a body streamed from ``chunks()``, counting the bytes sent."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        for piece in filter(None, chunks()):  # an empty chunk would end a chunked body
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            server[0].sent += len(piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)
    return behaviour


# --------------------------------------------------------------------------- bombs

WBITS = {"gzip": 31, "deflate": 15, "raw-deflate": -15}


@functools.cache
def _zero_checksums(mib: int) -> tuple[int, int]:
    """CRC-32 and Adler-32 of ``mib`` MiB of zeros (the stream trailers)."""
    zero, crc, adler = bytes(MIB), 0, 1
    for _ in range(mib):
        crc, adler = zlib.crc32(zero, crc), zlib.adler32(zero, adler)
    return crc, adler


@functools.cache
def _bomb_parts(wbits: int) -> tuple[bytes, bytes]:
    """The stream header and one MiB of zeros as a self-contained deflate block run.

    After a full flush the compressor starts afresh, so the second flushed MiB is
    byte-identical to every later one: the stream is header + block * N + end.
    """
    zero = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = compressor.compress(zero) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zero) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first[: len(first) - len(block)], block


def bomb_chunks(encoding: str, mib: int = 1024) -> Iterator[bytes]:
    """A valid gzip/zlib/raw-deflate stream of ``mib`` MiB of zeros, about 1 KiB per MiB.

    Deflate cannot beat about 1032:1, so 1 GiB takes about 1 MiB on the wire in all;
    it is generated as it is sent, never held whole.
    """
    wbits = WBITS[encoding]
    header, block = _bomb_parts(wbits)
    yield header
    for _ in range(mib):
        yield block
    end = b"\x03\x00"  # an empty final block with fixed Huffman codes
    if wbits > 15:
        crc, _ = _zero_checksums(mib)
        end += struct.pack("<II", crc, (mib * MIB) & 0xFFFFFFFF)
    elif wbits > 0:
        end += struct.pack(">I", _zero_checksums(mib)[1])
    yield end


def nested_gzip_bomb(mib: int = 1024) -> bytes:
    """gzip(gzip(``mib`` MiB of zeros)): a few KiB, a GiB only after two decodings."""
    inner = b"".join(bomb_chunks("gzip", mib))
    return zlib.compress(inner, 9, wbits=31)


# --------------------------------------------------------------------------- TLS


def padding_certificate(size: int) -> bytes:
    """A self-signed certificate (PEM) blown up to about ``size`` bytes by an extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "padding")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.UnrecognizedExtension(
                   ObjectIdentifier("1.3.6.1.4.1.55555.1"), bytes(size)), critical=False))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def tls_context(ca: trustme.CA, tmp: Path, *names: str, padding: tuple[int, int] = (0, 0),
                common_name: str | None = None) -> ssl.SSLContext:
    """A server context for ``names``; ``padding`` = (count, bytes) extra chain certs."""
    leaf = ca.issue_cert(*names, common_name=common_name)
    count, size = padding
    extra = padding_certificate(size) * count if count else b""
    chain, key = tmp / f"chain-{count}x{size}.pem", tmp / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + extra)
    leaf.private_key_pem.write_to_path(str(key))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(chain), str(key))
    return ctx
