"""Small real clients for the simnet tests: raw HTTP over TCP or TLS, and ClientHellos."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from kzprobe.simnet.common import HostPort


async def tls_connect(address: HostPort, name: str | None, ctx: ssl.SSLContext,
                      timeout: float = 3.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open TCP and complete a TLS handshake with SNI ``name``."""
    async with asyncio.timeout(timeout):
        return await asyncio.open_connection(*address, ssl=ctx, server_hostname=name)


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                  path: str = "/", timeout: float = 5.0) -> bytes:
    """Send one GET with Connection: close and read the whole response."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        await close(writer)


async def http_get(address: HostPort, host: str, path: str = "/") -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 3.0)
    return await request(reader, writer, host, path)


async def https_get(address: HostPort, host: str, ctx: ssl.SSLContext, path: str = "/") -> bytes:
    reader, writer = await tls_connect(address, host, ctx)
    return await request(reader, writer, host, path)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of a raw, non-chunked HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real Python TLS client (a ClientHello) for ``server_name``."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name) if server_name \
        else _no_sni(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _no_sni(incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> ssl.SSLObject:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_bio(incoming, outgoing)


def peer_chain(writer: asyncio.StreamWriter) -> list[bytes]:
    """DER certificates the server sent, leaf first (the private API kzprobe also uses)."""
    sslobj = writer.get_extra_info("ssl_object")
    chain = sslobj._sslobj.get_unverified_chain() or []
    return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in chain]  # type: ignore[attr-defined]


def no_verify() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
