"""Hostile TLS servers: stalls mid-handshake, oversized chains, garbage instead of TLS."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from kzprobe.engine import Engine
from tests.hostile.conftest import MEMORY_BOUND, SLACK, TLS_TIMEOUT, Run, bounded
from tests.hostile.servers import HostileServer, respond, tls_context
from tests.servers import DnsServer

SERVER_HELLO_START = b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + bytes(range(32))


@pytest.fixture(autouse=True)
def _names(dns_server: DnsServer) -> None:
    dns_server.zone["h.test"] = ["127.0.0.1"]


async def _measure(engine: Engine, server: HostileServer, name: str) -> Run:
    run = await bounded(engine, f"https://h.test:{server.port}/")
    run.report(name)
    return run


def _stall_after(sent: bytes, *, drip: bool = False) -> Any:
    """Read the ClientHello, send ``sent`` (all at once or a byte a second), then nothing."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        for piece in ([sent[i:i + 1] for i in range(len(sent))] if drip else [sent]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(1.0 if drip else 0)
        await asyncio.sleep(60)
    return behaviour


@pytest.mark.parametrize(
    ("name", "behaviour"),
    [
        ("silent after ClientHello", _stall_after(b"")),
        ("half a ServerHello, then silence", _stall_after(SERVER_HELLO_START)),
        ("ServerHello at 1 B/s", _stall_after(SERVER_HELLO_START, drip=True)),
    ],
)
async def test_handshake_stalls_end_at_the_tls_deadline(probe, hostile, still_works, name: str,
                                                        behaviour: Any) -> None:
    """A stalled handshake is generic_timeout_error at timeouts.tls, plus one benign-SNI check."""
    engine = probe()
    server = await hostile(behaviour)
    run = await _measure(engine, server, name)
    assert run.keys["tls_handshakes"][0]["failure"] == "generic_timeout_error"
    assert [c["failure"] for c in run.keys["x_sni_checks"]] == ["generic_timeout_error"]
    assert run.keys["http_experiment_failure"] == "generic_timeout_error"
    assert 2 * TLS_TIMEOUT - 0.5 < run.seconds < 2 * TLS_TIMEOUT + SLACK
    assert server.connections == 2
    await still_works(engine, https=True)


async def test_a_one_mebibyte_chain_is_refused_by_openssl(probe, hostile, still_works,
                                                          ca: trustme.CA, tmp_path: Path) -> None:
    """16 x 64 KiB certificates: over OpenSSL's 100 KiB cap, ssl_failed_handshake, fast, small."""
    context = tls_context(ca, tmp_path, "h.test", padding=(16, 64 * 1024))
    engine = probe()
    server = await hostile(respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"), context)
    run = await _measure(engine, server, "1 MiB certificate chain")
    shake = run.keys["tls_handshakes"][0]
    assert shake["failure"] == "ssl_failed_handshake"
    assert shake["peer_certificates"] == []  # refused as a message: never parsed into a chain
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine, https=True)


async def test_stored_chain_is_cut_at_max_chain_bytes(probe, hostile, ca: trustme.CA,
                                                      tmp_path: Path) -> None:
    """A 90 KiB chain OpenSSL accepts: the record keeps whole certificates up to max_chain_bytes."""
    context = tls_context(ca, tmp_path, "h.test", padding=(9, 10 * 1024))
    engine = probe(tls={"max_chain_bytes": 32 * 1024})
    server = await hostile(respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"), context)
    run = await _measure(engine, server, "90 KiB chain, 32 KiB stored")
    shake = run.keys["tls_handshakes"][0]
    chain = [base64.b64decode(c["data"]) for c in shake["peer_certificates"]]
    assert shake["failure"] is None
    assert 1 < len(chain) < 10
    assert sum(map(len, chain)) <= 32 * 1024
    leaf = x509.load_der_x509_certificate(chain[0])
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["h.test"]
    assert run.request["response"]["code"] == 200


async def _endless_records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    while not writer.is_closing():
        writer.write(b"\x16\x03\x03\x40\x00" + b"\x0b" * 0x4000)
        await writer.drain()


@pytest.mark.parametrize(
    ("name", "behaviour"),
    [
        ("plain HTTP on 443", _stall_after(b"HTTP/1.1 400 Bad Request\r\n\r\n")),
        ("binary garbage on 443", _stall_after(bytes(range(256)) * 8)),
        ("endless 16 KiB handshake records", _endless_records),
    ],
)
async def test_garbage_instead_of_tls_fails_the_handshake(probe, hostile, still_works, name: str,
                                                          behaviour: Any) -> None:
    """Not TLS at all, or endless handshake records: ssl_failed_handshake, fast and small."""
    engine = probe()
    run = await _measure(engine, await hostile(behaviour), name)
    assert run.keys["tls_handshakes"][0]["failure"] == "ssl_failed_handshake"
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine, https=True)
