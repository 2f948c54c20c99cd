"""Cheap loopback servers for the concurrency and steady-state benchmarks (one process).

    python benchmarks/servers.py --port P --dns-port D [--addresses 2500] [--delay 1.0]
                                 [--tls-port T --cert CHAIN.pem --key KEY.pem]

* HTTP on ``--addresses`` loopback addresses 127.3.x.y (one listening socket each, same
  port): reads a request, answers 200 with a small page after ``--delay`` seconds, closes.
  With ``--tls-port``, the same over TLS on that port too.
* DNS on 127.0.0.1:D (UDP): ``s<n>.c.bench`` A -> address n mod ``--addresses``; AAAA ->
  an empty answer; anything else -> NXDOMAIN.

Both are hand-rolled on uvloop so that at thousands of requests a second the servers'
CPU stays small next to the client's (a Python DNS library or web framework would make
the benchmark measure the server). Prints ``READY`` when listening. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import struct

import uvloop

PAGE = (b"<html><head><title>Slow site</title></head><body>" + b"x" * 1500 +
        b"</body></html>")
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(PAGE)).encode() + b"\r\n\r\n" + PAGE)
MAX_REQUEST = 16 * 1024


def address(index: int, count: int) -> str:
    """The loopback address of site ``index`` (127.3.0.1, 127.3.0.2, ...)."""
    slot = index % count
    return f"127.3.{slot // 250}.{slot % 250 + 1}"


def addresses(count: int) -> list[str]:
    return [address(i, count) for i in range(count)]


class SlowHttp(asyncio.Protocol):
    """Answers one request after ``delay`` seconds, then closes."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answered or (b"\r\n\r\n" not in self.buffer and len(self.buffer) < MAX_REQUEST):
            return
        self.answered = True
        asyncio.get_running_loop().call_later(self.delay, self.respond)

    def respond(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Dns(asyncio.DatagramProtocol):
    """A minimal authoritative answerer for ``s<n>.c.bench``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, self.count)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def _question(data: bytes) -> tuple[list[bytes], int] | None:
    """The query's labels and the offset just after the QNAME."""
    labels, pos = [], 12
    while pos < len(data) and data[pos]:
        size = data[pos]
        labels.append(data[pos + 1:pos + 1 + size])
        pos += 1 + size
    return (labels, pos + 1) if pos + 5 <= len(data) else None


def answer(data: bytes, count: int) -> bytes | None:
    if len(data) < 17:
        return None
    parsed = _question(data)
    if parsed is None:
        return None
    labels, end = parsed
    qtype = struct.unpack("!H", data[end:end + 2])[0]
    question = data[12:end + 4]
    name = b".".join(labels).lower()
    index = name[1:-8] if name.startswith(b"s") and name.endswith(b".c.bench") else b""
    header = data[:2]
    if not index.isdigit():
        return header + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    if qtype != 1:
        return header + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + question  # no answer
    ip = bytes(int(part) for part in address(int(index), count).split("."))
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ip
    return header + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + record


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    count, delay = args.addresses, args.delay
    servers = [await loop.create_server(lambda: SlowHttp(delay), host, args.port, backlog=4096)
               for host in addresses(count)]
    if args.tls_port:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        servers += [await loop.create_server(lambda: SlowHttp(delay), host, args.tls_port,
                                             ssl=ctx, backlog=4096)
                    for host in addresses(count)]
    await loop.create_datagram_endpoint(lambda: Dns(count),
                                        local_addr=("127.0.0.1", args.dns_port))
    print("READY", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dns-port", type=int, required=True)
    parser.add_argument("--addresses", type=int, default=2500)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert", help="PEM certificate chain for --tls-port")
    parser.add_argument("--key", help="PEM private key for --tls-port")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
