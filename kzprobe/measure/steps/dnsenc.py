"""Encrypted DNS step: one query over DNS over TLS (RFC 7858) or DNS over HTTPS (RFC 8484).

The wire format is dnspython's; the transport is kzprobe's own TCP and TLS steps, so an
endpoint experiment records the connect and the handshake like any other, and trust is
certifi's (or ``tls.ca_file``), never the OS store. DoH speaks HTTP/2 (the minimum RFC 8484
recommends; unbound's DoH speaks nothing else) through ``h2``'s sans-I/O state machine,
which lets every read be bounded here: a body is cut at :data:`MAX_REPLY` (the most a DNS
message can be), so a server streaming an endless body is a ``dns_reply_too_large``
failure, not a read that never ends. Each lookup makes its own connection: what is
measured is the resolver as a fresh client finds it.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import h2.config
import h2.connection
import h2.events
import h2.exceptions

from kzprobe import failures
from kzprobe.config import Resolver
from kzprobe.errors import classify
from kzprobe.measure.context import Stopwatch, close_transport
from kzprobe.measure.steps import stream, tcp, tls
from kzprobe.measure.steps.dns import DnsAnswer, DnsLookup, bound_answers

MAX_REPLY = 65535  # the largest DNS message (a 16-bit length): the cap of a DoH body
MAX_H2_BYTES = 4 * MAX_REPLY  # all the bytes a DoH exchange may read (frames, headers, body)
ALPN = {"dot": ("dot",), "doh": ("h2",)}
CONTENT_TYPE = "application/dns-message"
_RCODES = {dns.rcode.NXDOMAIN: failures.DNS_NXDOMAIN_ERROR,
           dns.rcode.SERVFAIL: failures.DNS_SERVFAIL_ERROR,
           dns.rcode.REFUSED: failures.DNS_REFUSED_ERROR}
_KINDS = {dns.rdatatype.A: "A", dns.rdatatype.AAAA: "AAAA", dns.rdatatype.CNAME: "CNAME"}


class Misbehaving(Exception):
    """A reply that is no usable answer: ``dns_server_misbehaving``."""


class ReplyTooLarge(Exception):
    """More than a DNS message's worth of reply: ``dns_reply_too_large``."""


@dataclass(frozen=True, slots=True)
class DohPath:
    """Where a DoH query goes on the connection: the ``:authority`` and ``:path``."""

    authority: str
    path: str


@functools.lru_cache(maxsize=8)
def client_context(ca_file: Path | None, protocol: str) -> ssl.SSLContext:
    """A verifying context for DoT (ALPN ``dot``) or DoH (ALPN ``h2``), made once."""
    return tls.make_context(ca_file=ca_file, alpn=ALPN[protocol])


def failure_of(exc: BaseException) -> str:
    """The failure string of an exchange that raised."""
    if isinstance(exc, ReplyTooLarge | stream.ReplyTooLarge):
        return failures.DNS_REPLY_TOO_LARGE
    if isinstance(exc, Misbehaving | dns.exception.DNSException | h2.exceptions.H2Error):
        return failures.DNS_SERVER_MISBEHAVING
    return classify(exc)


# --------------------------------------------------------------------------- wire format


def make_query(name: str, query_type: str, *, doh: bool) -> dns.message.QueryMessage:
    """A recursive query; DoH's id is 0 (RFC 8484 4.1: caches key on the body)."""
    query = dns.message.make_query(name, query_type)
    if doh:
        query.id = 0
    return query


def judge_reply(query: dns.message.Message, wire: bytes,
                query_type: str) -> tuple[str | None, tuple[DnsAnswer, ...]]:
    """The failure (None for an answer of ``query_type``) and the bounded answers."""
    reply = dns.message.from_wire(wire)
    if not query.is_response(reply):
        raise Misbehaving("the reply answers another question")
    failure = _RCODES.get(reply.rcode())
    if failure is None and reply.rcode() != dns.rcode.NOERROR:
        failure = failures.DNS_SERVER_MISBEHAVING
    answers = bound_answers([
        DnsAnswer(answer_type=_KINDS[rrset.rdtype], value=_value(rdata), ttl=rrset.ttl)
        for rrset in reply.answer if rrset.rdtype in _KINDS for rdata in rrset])
    if failure is None and not any(a.answer_type == query_type for a in answers):
        failure = failures.DNS_NO_ANSWER
    return failure, answers


def _value(rdata: object) -> str:
    address = getattr(rdata, "address", None)
    if isinstance(address, str):
        return address
    return str(getattr(rdata, "target", "")).rstrip(".")


# --------------------------------------------------------------------------- exchanges


def _dot_complete(buffer: bytes) -> int | None:
    if len(buffer) < 2:
        return None
    size = 2 + int.from_bytes(buffer[:2], "big")
    return size if len(buffer) >= size else None


async def exchange_dot(transport: asyncio.Transport, held: tcp.HeldProtocol,
                       wire: bytes) -> bytes:
    """Write one length-prefixed query, read one length-prefixed reply (bounded)."""
    reader = stream.StreamProtocol.adopt(transport, held)
    reader.limit = MAX_REPLY + 2
    transport.write(len(wire).to_bytes(2, "big") + wire)
    tcp.ack_at_once(transport)
    reply = await reader.read_until(_dot_complete)
    return reply[2:]


def _anything(buffer: bytes) -> int | None:
    return len(buffer) or None


@dataclass(slots=True)
class _H2Reply:
    stream_id: int
    status: str = ""
    content_type: str = ""
    body: bytearray | None = None
    ended: bool = False

    def take(self, event: h2.events.Event, conn: h2.connection.H2Connection) -> None:
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == self.stream_id:
            headers = {bytes(k).lower(): bytes(v) for k, v in event.headers or ()}
            self.status = headers.get(b":status", b"").decode("latin-1")
            self.content_type = headers.get(b"content-type", b"").decode("latin-1")
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream_id:
            self.body = (self.body or bytearray()) + (event.data or b"")
            if len(self.body) > MAX_REPLY:
                raise ReplyTooLarge(f"DoH body over {MAX_REPLY} bytes")
            conn.acknowledge_received_data(event.flow_controlled_length or 0, self.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream_id:
            self.ended = True
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream_id:
            raise Misbehaving(f"DoH stream reset (error {event.error_code})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise stream.PeerClosed("DoH connection terminated (GOAWAY)")

    def message(self) -> bytes:
        if self.status != "200" or self.content_type.split(";")[0].strip() != CONTENT_TYPE:
            raise Misbehaving(f"DoH status {self.status!r}, type {self.content_type!r}")
        return bytes(self.body or b"")


def _doh_request(conn: h2.connection.H2Connection, wire: bytes, where: DohPath) -> int:
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [
        (":method", "POST"), (":scheme", "https"), (":authority", where.authority),
        (":path", where.path), ("accept", CONTENT_TYPE), ("content-type", CONTENT_TYPE),
        ("content-length", str(len(wire)))])
    conn.send_data(stream_id, wire, end_stream=True)
    return stream_id


async def exchange_doh(transport: asyncio.Transport, held: tcp.HeldProtocol, wire: bytes,
                       where: DohPath) -> bytes:
    """POST one query over HTTP/2 and read its reply: at most :data:`MAX_REPLY` bytes of
    body and :data:`MAX_H2_BYTES` in all (a flood of other frames ends too)."""
    reader = stream.StreamProtocol.adopt(transport, held)
    reader.limit = MAX_H2_BYTES
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    reply = _H2Reply(_doh_request(conn, wire, where))
    transport.write(conn.data_to_send())
    seen = 0
    while not reply.ended:
        chunk = await reader.read_until(_anything)
        seen += len(chunk)
        if seen > MAX_H2_BYTES:
            raise ReplyTooLarge(f"DoH exchange over {MAX_H2_BYTES} bytes")
        for event in conn.receive_data(chunk):
            reply.take(event, conn)
        outgoing = conn.data_to_send()
        if outgoing:
            transport.write(outgoing)
    return reply.message()


async def ask(transport: asyncio.Transport, held: tcp.HeldProtocol, name: str,
              query_type: str, doh: DohPath | None) -> tuple[str | None, tuple[DnsAnswer, ...]]:
    """One query on a secured connection (DoT, or DoH when ``doh`` says where); raises
    what went wrong (:func:`failure_of` names it)."""
    query = make_query(name, query_type, doh=doh is not None)
    wire = query.to_wire()
    if doh is None:
        reply = await exchange_dot(transport, held, wire)
    else:
        reply = await exchange_doh(transport, held, wire, doh)
    return judge_reply(query, reply, query_type)


# --------------------------------------------------------------------------- resolvers


def doh_path(resolver: Resolver) -> DohPath:
    """The DoH request target of a configured ``https://`` resolver."""
    rest = resolver.url.partition("://")[2]
    authority, _, path = rest.partition("/")
    return DohPath(authority=authority, path="/" + path)


async def _bootstrap(name: str, port: int) -> str:
    """A DoH resolver's address when no ``bootstrap`` IP was configured: getaddrinfo's
    (the way a browser finds its DoH server)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    if not infos:
        raise Misbehaving(f"no address for {name}")
    return str(infos[0][4][0])


async def _query_resolver(host: str, query_type: str, resolver: Resolver, *, timeout: float,
                          clock: Stopwatch, ca_file: Path | None,
                          source: str | None) -> tuple[str | None, tuple[DnsAnswer, ...]]:
    ip = resolver.address or await _bootstrap(resolver.server_name, resolver.port)
    result, transport, held = await tcp.connect(ip, resolver.port, timeout=timeout,
                                                clock=clock, source=source)
    if transport is None or held is None:
        return result.failure, ()
    secured: asyncio.Transport | None = None
    try:
        shake, secured = await tls.handshake(
            transport, held, address=result.address, server_name=resolver.server_name,
            context=client_context(ca_file, resolver.protocol), timeout=timeout, clock=clock,
            max_chain_bytes=0)
        if secured is None:
            return shake.failure, ()
        doh = doh_path(resolver) if resolver.protocol == "doh" else None
        return await ask(secured, held, host, query_type, doh)
    finally:
        await close_transport(secured or transport)


async def lookup_encrypted(host: str, query_type: str, resolver: Resolver, *, timeout: float,
                           clock: Stopwatch, ca_file: Path | None, source: str | None = None,
                           tags: tuple[str, ...] = ()) -> DnsLookup:
    """Ask a DoT or DoH resolver; ``timeout`` bounds the whole lookup (connect, handshake,
    query). Recorded as OONI's are: ``engine`` ``dot``/``doh``, the resolver's address
    (``ip:port``, or DoH's URL)."""
    t0 = clock.now()
    answers: tuple[DnsAnswer, ...] = ()
    try:
        async with asyncio.timeout(timeout):
            failure, answers = await _query_resolver(
                host, query_type, resolver, timeout=timeout, clock=clock, ca_file=ca_file,
                source=source)
    except Exception as exc:
        failure = failure_of(exc)
    return DnsLookup(hostname=host, query_type=query_type, engine=resolver.protocol,
                     resolver_address=resolver.resolver_address, failure=failure,
                     answers=answers, t0=t0, t=clock.now(), tags=tags)
