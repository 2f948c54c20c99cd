"""Encrypted-DNS servers for tests, all on 127.0.0.1: Debian's ``unbound`` serving DoT and
DoH (HTTP/2) from local data only, and small hostile servers in Python (an endless DoH
body, a DoT server that never answers or sends a cut length prefix).

unbound never recurses: the root zone is ``refuse``d and only the test names have
``local-data``, so no query leaves the machine.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trustme

UNBOUND = shutil.which("unbound") or ("/usr/sbin/unbound"
                                      if Path("/usr/sbin/unbound").exists() else None)
NAME = "dns.test"  # the name on the servers' certificate
ANSWERS = {"site.test.": "192.0.2.10", "other.test.": "192.0.2.11", "loop.test.": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Unbound:
    dot_port: int
    doh_port: int
    udp_port: int  # plain DNS (UDP and TCP): the baseline of the overhead benchmark


def _unbound_conf(tmp: Path, dot_port: int, doh_port: int, udp_port: int, cert: Path,
                  key: Path) -> str:
    local = "\n".join(f'    local-data: "{name} 60 IN A {ip}"' for name, ip in ANSWERS.items())
    return f"""server:
    interface: 127.0.0.1@{dot_port}
    interface: 127.0.0.1@{doh_port}
    interface: 127.0.0.1@{udp_port}
    tls-port: {dot_port}
    https-port: {doh_port}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    http-endpoint: "/dns-query"
    http-notls-downstream: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-ip6: no
    do-not-query-localhost: yes
    access-control: 127.0.0.0/8 allow
    local-zone: "." refuse
    local-zone: "test." static
{local}
remote-control:
    control-enable: no
"""


def _wait_listening(ports: tuple[int, ...], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"unbound exited: {proc.stderr.read() if proc.stderr else ''!r}")
        try:
            for port in ports:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("unbound did not start listening")


@contextmanager
def unbound(tmp: Path, ca: trustme.CA) -> Iterator[Unbound]:
    """unbound on three free loopback ports (DoT, DoH, plain), a certificate for :data:`NAME` and
    127.0.0.1 from ``ca``; stopped after."""
    assert UNBOUND is not None
    cert = ca.issue_cert(NAME, "127.0.0.1")
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    ports = (free_port(), free_port(), free_port())
    conf = tmp / "unbound.conf"
    conf.write_text(_unbound_conf(tmp, *ports, cert_file, key_file))
    proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_listening(ports, proc)
        yield Unbound(*ports)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- hostile servers


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_context(ca: trustme.CA, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(NAME, "127.0.0.1").configure_cert(context)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


async def start_tls_server(handler: Handler, context: ssl.SSLContext) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the query and says nothing until the client gives up."""
    await reader.read(65536)
    await reader.read()  # until the client closes
    writer.close()


async def cut_prefix(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Announces a 512-byte reply, sends 10 bytes of it and closes."""
    await reader.read(65536)
    writer.write((512).to_bytes(2, "big") + b"\x00" * 10)
    await writer.drain()
    writer.close()


async def huge_prefix(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Announces the largest reply and streams bytes until the client stops reading."""
    await reader.read(65536)
    writer.write(b"\xff\xff")
    try:
        for _ in range(1000):  # bounded: 16 MB at most
            writer.write(b"\x00" * 16384)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()


async def endless_doh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/2 server whose reply to any request is 200 and a body that never ends
    (bounded here: it stops after 16 MB or when the client goes)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    sent = 0
    try:
        while sent < 16 * 1024 * 1024:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, [(":status", "200"), (
                        "content-type", "application/dns-message")])
            for stream_id in list(conn.streams):
                sent += _fill_window(conn, stream_id)
            writer.write(conn.data_to_send())
            await writer.drain()
    except (ConnectionError, OSError, h2.exceptions.H2Error):
        pass
    writer.close()


def _fill_window(conn: h2.connection.H2Connection, stream_id: int) -> int:
    """Send body bytes up to what flow control allows now; return how many."""
    sent = 0
    while (window := min(conn.local_flow_control_window(stream_id), 16384)) > 0:
        conn.send_data(stream_id, b"\x00" * window)
        sent += window
    return sent
