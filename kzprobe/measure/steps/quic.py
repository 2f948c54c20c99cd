"""QUIC step: a handshake, and optionally one HTTP/3 GET, with aioquic (OONI's QUIC records).

The handshake is recorded as a ``quic_handshakes`` entry: df-006 with ``network: "udp"``.
The GET goes on the same connection and is a ``requests`` entry with ``network: "udp"``.
The UDP socket is connected, so only the target's datagrams are read and an ICMP port
unreachable surfaces as ``connection_refused`` (``quic.reset``). Everything is bounded:
the handshake by ``timeout``, the GET by ``http_timeout``, the body by ``body_limit``
(then the connection is closed: an endless body is a truncated one), headers by count.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from cryptography.hazmat.primitives.serialization import Encoding

from kzprobe import failures
from kzprobe.errors import HttpFailure, QuicClosed, classify
from kzprobe.measure import traffic
from kzprobe.measure.context import Stopwatch
from kzprobe.measure.headers import REQUEST_HEADERS
from kzprobe.measure.steps.http import HttpResponse, HttpTransaction
from kzprobe.measure.steps.tls import TlsHandshake
from kzprobe.netaddr import join_hostport

MAX_HEADERS = 200  # response header fields kept
MAX_HEADER_BYTES = 1 << 20
MAX_ALT_SVC = 4096  # characters of an Alt-Svc value read


def advertised_h3(alt_svc: str) -> int | None:
    """The UDP port of an ``h3`` alternative on the same host in an Alt-Svc value (RFC 7838),
    or None. Alternatives on other hosts are ignored: the probe measures the URL's host."""
    for entry in alt_svc[:MAX_ALT_SVC].split(","):
        protocol, _, rest = entry.strip().partition("=")
        if protocol.strip() != "h3":
            continue
        authority = rest.split(";", 1)[0].strip().strip('"')
        host, sep, port = authority.rpartition(":")
        if sep and not host and port.isdigit() and 0 < int(port) < 65536:
            return int(port)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicHandshake(TlsHandshake):
    """One QUIC handshake, archived like a TLS handshake on ``network: "udp"``."""

    network: str = "udp"


def request_archival(transaction: HttpTransaction) -> dict[str, Any]:
    """A df-001 entry for a GET over HTTP/3: the TCP one with ``network``/``x_transport`` udp."""
    entry = transaction.archival()
    entry["network"] = "udp"
    entry["request"]["x_transport"] = "udp"
    return entry


@dataclass(slots=True)
class _Response:
    """The GET's progress, filled by the protocol's events."""

    stream_id: int
    limit: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class _Client(QuicConnectionProtocol):
    """aioquic's protocol, plus what a measurement needs: the close reason, ICMP errors,
    and one bounded HTTP/3 response."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.shaken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self.h3: H3Connection | None = None
        self.response: _Response | None = None
        self.meter = traffic.current()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.meter is not None:
            self.meter.add(received=len(data))
        super().datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on the connected socket (port unreachable: connection refused)."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self.shaken.done():
            self.shaken.set_exception(exc)
            self.shaken.exception()  # retrieved: a failed handshake is data, not a warning
        if self.response is not None:
            self.response.started.set()
            self.response.finished.set()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted) and not self.shaken.done():
            self.shaken.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            self._fail(QuicClosed(event.error_code, event.frame_type, event.reason_phrase,
                                  established=self.shaken.done() and self.error is None,
                                  invalid_reply=self.error is None and self._closed_by_h3))
        if self.h3 is not None:
            closing = self._quic._close_event is not None
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)
            # aioquic's H3 layer closes the connection itself on a malformed reply
            self._closed_by_h3 = self._closed_by_h3 or (
                not closing and self._quic._close_event is not None)

    _closed_by_h3 = False

    def _h3_event(self, event: H3Event) -> None:
        response = self.response
        if response is None or getattr(event, "stream_id", None) != response.stream_id:
            return
        if isinstance(event, HeadersReceived) and not response.started.is_set():
            response.headers = list(event.headers[:MAX_HEADERS])
            response.started.set()
        elif isinstance(event, DataReceived):
            room = response.limit - len(response.body)
            response.body += event.data[:max(room, 0)]
            if len(event.data) > room:
                response.truncated = True
                response.finished.set()
        if getattr(event, "stream_ended", False):
            response.started.set()
            response.finished.set()


def configuration(server_name: str, *, ca_file: Path | None, verify: bool,
                  alpn: tuple[str, ...], idle_timeout: float) -> QuicConfiguration:
    """A client configuration: kzprobe's trust store (certifi or tls.ca_file), never the OS's."""
    config = QuicConfiguration(is_client=True, alpn_protocols=list(alpn),
                               server_name=server_name, idle_timeout=idle_timeout)
    config.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    config.cafile = str(ca_file) if ca_file else certifi.where()
    return config


@dataclass(frozen=True, slots=True, kw_only=True)
class Get:
    """The HTTP/3 GET to make after the handshake."""

    url: str
    timeout: float
    body_limit: int
    tags: tuple[str, ...] = ()


async def exchange(ip: str, port: int, *, server_name: str, clock: Stopwatch, timeout: float,
                   ca_file: Path | None, verify: bool = True, alpn: tuple[str, ...] = ("h3",),
                   max_chain_bytes: int = 256 * 1024, source: str | None = None,
                   transaction_id: int = 0, tags: tuple[str, ...] = (),
                   get: Get | None = None) -> tuple[QuicHandshake, HttpTransaction | None]:
    """Handshake with ``ip:port`` (SNI ``server_name``), then ``get`` if given; never raises
    for network trouble. The transaction is None when no GET was made."""
    loop = asyncio.get_running_loop()
    address = join_hostport(ip, port)
    idle = timeout + (get.timeout if get else 0.0) + 1.0
    config = configuration(server_name, ca_file=ca_file, verify=verify, alpn=alpn,
                           idle_timeout=idle)
    transport: asyncio.DatagramTransport | None = None
    client: _Client | None = None
    failure: str | None = None
    t0 = clock.now()
    try:
        async with asyncio.timeout(timeout):
            transport, client = await loop.create_datagram_endpoint(
                lambda: _Client(QuicConnection(configuration=config)),
                remote_addr=(ip, port), local_addr=(source, 0) if source else None)
            client.connect(transport.get_extra_info("peername"))
            await asyncio.shield(client.shaken)
    except Exception as exc:
        failure = classify(exc)
    shake = _handshake(client, address, server_name, failure, t0, clock.now(),
                       max_chain_bytes=max_chain_bytes, verify=verify, tid=transaction_id,
                       tags=tags)
    transaction = None
    try:
        if get is not None and failure is None and client is not None:
            transaction = await _get(client, get, address, clock, transaction_id)
    finally:
        if client is not None and transport is not None:
            _charge_sent(client)
            client.close()
            transport.close()
    return shake, transaction


def _charge_sent(client: _Client) -> None:
    """Bytes sent, from aioquic's own count (the datagrams go out inside aioquic)."""
    sent = sum(path.bytes_sent for path in client._quic._network_paths)
    traffic.charge(sent=sent)


def _handshake(client: _Client | None, address: str, server_name: str, failure: str | None,
               t0: float, t: float, *, max_chain_bytes: int, verify: bool, tid: int,
               tags: tuple[str, ...]) -> QuicHandshake:
    tls = client._quic.tls if client is not None else None
    chain: list[bytes] = []
    suite, alpn = "", ""
    if tls is not None:
        certs = [tls._peer_certificate, *tls._peer_certificate_chain]
        total = 0
        for cert in certs:
            if cert is None:
                continue
            der = cert.public_bytes(Encoding.DER)
            total += len(der)
            if total > max_chain_bytes:
                break
            chain.append(der)
        if tls.key_schedule is not None and failure is None:
            suite = "TLS_" + tls.key_schedule.cipher_suite.name
        alpn = tls.alpn_negotiated or ""
    return QuicHandshake(address=address, server_name=server_name, failure=failure,
                         no_tls_verify=not verify, peer_certificates=tuple(chain),
                         tls_version="TLSv1.3" if failure is None else "",
                         cipher_suite=suite, negotiated_protocol=alpn, t0=t0, t=t,
                         transaction_id=tid, tags=tags)


def _request_headers(url: str) -> list[tuple[bytes, bytes]]:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    pseudo = [(b":method", b"GET"), (b":scheme", b"https"),
              (b":authority", parts.netloc.encode("idna")), (b":path", path.encode())]
    return pseudo + [(k.lower().encode(), v.encode()) for k, v in REQUEST_HEADERS]


def _response(state: _Response) -> HttpResponse:
    status = next((v for k, v in state.headers if k == b":status"), b"")
    if not status.isdigit():
        raise HttpFailure(failures.HTTP_INVALID_RESPONSE)
    kept, total = [], 0
    for key, value in state.headers:
        total += len(key) + len(value)
        if key.startswith(b":") or total > MAX_HEADER_BYTES:
            continue
        kept.append((key.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
    return HttpResponse(code=int(status), headers_list=tuple(kept), body=bytes(state.body),
                        body_is_truncated=state.truncated)


async def _get(client: _Client, get: Get, address: str, clock: Stopwatch,
               tid: int) -> HttpTransaction:
    """One GET on the open connection, bounded in time and bytes."""
    t0 = clock.now()
    ttfb = body_seconds = None
    response: HttpResponse | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(get.timeout):
            h3 = client.h3 = H3Connection(client._quic)
            stream_id = client._quic.get_next_available_stream_id()
            state = client.response = _Response(stream_id, get.body_limit)
            h3.send_headers(stream_id, _request_headers(get.url), end_stream=True)
            client.transmit()
            await state.started.wait()
            ttfb = round(clock.now() - t0, 6)
            await state.finished.wait()
            if client.error is not None and not state.truncated:
                raise client.error
            body_seconds = round(clock.now() - t0 - ttfb, 6)
            response = _response(state)
    except Exception as exc:
        failure = classify(exc)
    return HttpTransaction(url=get.url, address=address, alpn=H3_ALPN[0], failure=failure,
                           request_headers=REQUEST_HEADERS, response=response, t0=t0,
                           t=clock.now(), ttfb=ttfb, body_seconds=body_seconds,
                           transaction_id=tid, tags=get.tags)
