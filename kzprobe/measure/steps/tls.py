"""TLS step: a handshake on a measured TCP connection, recorded as OONI df-006.

Verification uses kzprobe's own trust store (certifi's Mozilla bundle or
``tls.ca_file``), never the OS store, so a government root installed on the host does
not hide interception. The peer's chain is recorded even when verification fails: the
issuer of a MITM certificate is the evidence. Python only exposes that chain from
inside the handshake, so the SSL object class captures it there.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi

from kzprobe.errors import classify
from kzprobe.measure import traffic
from kzprobe.measure.context import Stopwatch, connection_scratch
from kzprobe.measure.steps.tcp import HeldProtocol

# OpenSSL names of common TLS 1.2 suites -> IANA names (what OONI records).
_IANA_SUITES = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
}


def _chain_der(sslobj: ssl.SSLObject) -> list[bytes]:
    getter = getattr(sslobj, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = sslobj._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    chain = getter() or []
    return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in chain]  # type: ignore[attr-defined]


class RecordingSSLObject(ssl.SSLObject):
    """Captures the server's chain at the end of the handshake, whatever its outcome."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except ssl.SSLWantReadError:
            raise
        except ssl.SSLError:
            self._capture()
            raise
        self._capture()

    def _capture(self) -> None:
        scratch = connection_scratch.get()
        if scratch is not None and "peer_chain" not in scratch:
            try:
                scratch["peer_chain"] = _chain_der(self)
            except Exception:  # a chain we cannot read is simply not recorded
                scratch["peer_chain"] = []


def make_context(
    *, ca_file: Path | None, alpn: tuple[str, ...], verify: bool = True
) -> ssl.SSLContext:
    """Build a client context once at start-up (loading a trust store costs tens of ms)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else certifi.where())
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    ctx.sslobject_class = RecordingSSLObject
    return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsHandshake:
    """One TLS handshake as OONI's df-006 ``tls_handshakes`` entry (QUIC's reuses it)."""

    address: str
    server_name: str
    failure: str | None
    network: str = "tcp"
    no_tls_verify: bool = False
    peer_certificates: tuple[bytes, ...] = ()
    tls_version: str = ""
    cipher_suite: str = ""
    negotiated_protocol: str = ""
    t0: float = 0.0
    t: float = 0.0
    transaction_id: int = 0
    tags: tuple[str, ...] = field(default=())

    def archival(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "address": self.address,
            "server_name": self.server_name,
            "failure": self.failure,
            "so_error": None,
            "no_tls_verify": self.no_tls_verify,
            "peer_certificates": [
                {"format": "base64", "data": base64.b64encode(der).decode()}
                for der in self.peer_certificates
            ],
            "tls_version": self.tls_version,
            "cipher_suite": self.cipher_suite,
            "negotiated_protocol": self.negotiated_protocol,
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
            "tags": list(self.tags),
        }


def _bounded_chain(chain: list[bytes], max_bytes: int) -> tuple[bytes, ...]:
    kept, total = [], 0
    for der in chain:
        total += len(der)
        if total > max_bytes:
            break
        kept.append(der)
    return tuple(kept)


def _session_facts(transport: asyncio.BaseTransport) -> tuple[str, str, str]:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return "", "", ""
    cipher = (sslobj.cipher() or ("", "", 0))[0]
    return (
        sslobj.version() or "",
        _IANA_SUITES.get(cipher, cipher),
        sslobj.selected_alpn_protocol() or "",
    )


async def handshake(
    transport: asyncio.Transport,
    protocol: HeldProtocol,
    *,
    address: str,
    server_name: str,
    context: ssl.SSLContext,
    timeout: float,
    clock: Stopwatch,
    max_chain_bytes: int,
    transaction_id: int = 0,
    tags: tuple[str, ...] = (),
) -> tuple[TlsHandshake, asyncio.Transport | None]:
    """Run a TLS handshake over ``transport``; return the record and the TLS transport."""
    loop = asyncio.get_running_loop()
    scratch = protocol.scratch
    token = connection_scratch.set(scratch)
    t0 = clock.now()
    tls_transport: asyncio.Transport | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout):
            tls_transport = await loop.start_tls(
                transport,
                protocol,
                context,
                server_hostname=server_name,
                ssl_handshake_timeout=timeout + 1.0,
            )
    except Exception as exc:
        failure = classify(exc)
    finally:
        connection_scratch.reset(token)
        if protocol.tally is not None:  # read now: a failed start_tls closes the socket soon
            protocol.tally.settle()
    if tls_transport is not None:
        traffic.watch_raw(transport, protocol.tally)
    chain: list[bytes] = scratch.get("peer_chain", [])
    version, suite, alpn = ("", "", "") if tls_transport is None else _session_facts(tls_transport)
    result = TlsHandshake(
        address=address,
        server_name=server_name,
        failure=failure,
        peer_certificates=_bounded_chain(chain, max_chain_bytes),
        tls_version=version,
        cipher_suite=suite,
        negotiated_protocol=alpn,
        t0=t0,
        t=clock.now(),
        transaction_id=transaction_id,
        tags=tags,
    )
    return result, tls_transport
