"""TCP and TLS steps against real loopback servers: each failure string from a real socket event."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from kzprobe.measure.context import Stopwatch, close_transport
from kzprobe.measure.steps import tcp, tls
from tests.servers import WebSite, fin_after_hello, refused_port, reset_after_hello, stall


def _context(ca_file: Path) -> ssl.SSLContext:
    return tls.make_context(ca_file=ca_file, alpn=("h2", "http/1.1"))


async def _handshake(port: int, sni: str, ctx: ssl.SSLContext, timeout: float = 2.0):
    clock = Stopwatch()
    result, transport, held = await tcp.connect("127.0.0.1", port, timeout=2.0, clock=clock)
    assert transport is not None and held is not None, result.failure
    shake, tls_transport = await tls.handshake(
        transport, held, address=result.address, server_name=sni, context=ctx,
        timeout=timeout, clock=clock, max_chain_bytes=1 << 20)
    await close_transport(tls_transport or transport)
    return shake


@pytest.fixture
def backlog_full_port() -> Iterator[int]:
    """A listener whose accept queue is full: further SYNs are dropped, connects time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


async def test_connect_success_is_recorded() -> None:
    """A listening port gives success with timings."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result, transport, _ = await tcp.connect("127.0.0.1", port, timeout=2, clock=Stopwatch())
    await close_transport(transport)
    server.close()
    assert result.archival()["status"] == {"success": True, "failure": None, "blocked": None}


async def test_refused_port_is_connection_refused() -> None:
    """RST to the SYN (nothing listening) is connection_refused."""
    result, transport, _ = await tcp.connect("127.0.0.1", refused_port(), timeout=2,
                                             clock=Stopwatch())
    assert transport is None
    assert result.failure == "connection_refused"


async def test_dropped_syn_is_a_timeout(backlog_full_port: int) -> None:
    """SYNs that get no answer end as generic_timeout_error at the deadline."""
    result, transport, _ = await tcp.connect("127.0.0.1", backlog_full_port, timeout=0.5,
                                             clock=Stopwatch())
    await close_transport(transport)
    assert result.failure == "generic_timeout_error"


async def test_tls_success_records_chain_and_session(website: WebSite, ca_file: Path) -> None:
    """A valid handshake records version, cipher, ALPN and the DER chain."""
    shake = await _handshake(website.https_port, "site.test", _context(ca_file))
    assert shake.failure is None
    assert shake.tls_version == "TLSv1.3"
    assert shake.cipher_suite.startswith("TLS_")
    leaf = x509.load_der_x509_certificate(shake.peer_certificates[0])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "site.test" in names.get_values_for_type(x509.DNSName)
    archived = shake.archival()["peer_certificates"][0]
    assert base64.b64decode(archived["data"]) == shake.peer_certificates[0]


async def test_unknown_authority_still_records_the_chain(website: WebSite, tmp_path: Path) -> None:
    """A certificate from an untrusted CA (a MITM) fails verification, chain recorded."""
    other = trustme.CA()
    other_file = tmp_path / "other.pem"
    other.cert_pem.write_to_path(str(other_file))
    shake = await _handshake(website.https_port, "site.test", _context(other_file))
    assert shake.failure == "ssl_unknown_authority"
    assert len(shake.peer_certificates) >= 1


async def test_wrong_name_is_invalid_hostname(website: WebSite, ca_file: Path) -> None:
    """A valid chain for another name is ssl_invalid_hostname."""
    shake = await _handshake(website.https_port, "elsewhere.test", _context(ca_file))
    assert shake.failure == "ssl_invalid_hostname"
    assert shake.peer_certificates


async def test_reset_after_client_hello_is_connection_reset(raw_server, ca_file: Path) -> None:
    """An RST right after the ClientHello (SNI filtering) is connection_reset."""
    server = await raw_server(reset_after_hello)
    shake = await _handshake(server.port, "blocked.test", _context(ca_file))
    assert shake.failure == "connection_reset"


async def test_fin_after_client_hello_is_eof(raw_server, ca_file: Path) -> None:
    """A clean close after the ClientHello is eof_error, not a reset."""
    server = await raw_server(fin_after_hello)
    shake = await _handshake(server.port, "blocked.test", _context(ca_file))
    assert shake.failure == "eof_error"


async def test_stalled_handshake_is_a_timeout(raw_server, ca_file: Path) -> None:
    """A server that swallows the ClientHello and never answers: generic_timeout_error."""
    server = await raw_server(stall)
    shake = await _handshake(server.port, "blocked.test", _context(ca_file), timeout=0.5)
    assert shake.failure == "generic_timeout_error"
    assert shake.t - shake.t0 < 3.0


async def test_expired_certificate_is_invalid_certificate(ca: trustme.CA, ca_file: Path) -> None:
    """An expired leaf from a trusted CA is ssl_invalid_certificate."""
    import datetime

    leaf = ca.issue_cert("old.test", not_after=datetime.datetime(2020, 1, 1,
                                                                  tzinfo=datetime.UTC))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(sctx)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    try:
        shake = await _handshake(port, "old.test", _context(ca_file))
    finally:
        server.close()
    assert shake.failure == "ssl_invalid_certificate"
