"""The measurement flow's steps, one copy for every experiment and for the helper:
resolve, dial (TCP connect with a transaction id and tags), secure (TLS handshake over a
connection), the benign-SNI check, and starting the control query.

Resolve: every configured resolver is asked (``system`` through getaddrinfo; the others A, plus
AAAA when ``dns.query_aaaa`` is on), so a resolver that lies or fails is seen next to
one that answers. OONI LTE tags the lookup a browser would use ``classic``: ours is the
first resolver's getaddrinfo or its A query (a v4-only name's empty AAAA answer is no
failure of the name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from kzprobe import failures
from kzprobe.measure import traffic
from kzprobe.measure.context import (
    ControlResult,
    ProbeContext,
    Stopwatch,
    close_transport,
    is_dialable,
)
from kzprobe.measure.steps import dns, dnsenc, tcp, tls
from kzprobe.netaddr import join_hostport


@dataclass(frozen=True, slots=True)
class Resolution:
    """Every lookup made, the addresses found (first seen first), and the failure when
    there were none (the first failing lookup's, else ``dns_no_answer``)."""

    lookups: tuple[dns.DnsLookup, ...]
    addresses: list[str]
    failure: str | None


ENCRYPTED_ENGINES = frozenset({"dot", "doh"})  # engines of the DoT and DoH lookups
# A resolver answered (charged a response) unless the lookup timed out or could not be sent.
_ANSWERED = frozenset({None, failures.DNS_NXDOMAIN_ERROR, failures.DNS_NO_ANSWER,
                       failures.DNS_SERVFAIL_ERROR, failures.DNS_REFUSED_ERROR,
                       failures.DNS_SERVER_MISBEHAVING})


async def resolve(host: str, ctx: ProbeContext, clock: Stopwatch, *,
                  depth: int = 0) -> Resolution:
    """Ask every configured resolver for ``host`` (a name, not an IP literal)."""
    cfg = ctx.config
    depth_tag = f"depth={depth}"
    jobs = []
    for index, resolver in enumerate(cfg.dns.resolvers):
        if resolver.is_system:
            tags = (depth_tag, "classic") if index == 0 else (depth_tag,)
            jobs.append(dns.lookup_system(host, timeout=cfg.timeouts.dns, clock=clock, tags=tags))
            continue
        if resolver.is_encrypted:  # never "classic": a browser's lookup is the plain one
            jobs.extend(dnsenc.lookup_encrypted(
                host, qtype, resolver, timeout=cfg.timeouts.dns, clock=clock,
                ca_file=cfg.tls.ca_file, source=ctx.source_address, tags=(depth_tag,))
                for qtype in (("A", "AAAA") if cfg.dns.query_aaaa else ("A",)))
            continue
        for qtype in ("A", "AAAA") if cfg.dns.query_aaaa else ("A",):
            classic = index == 0 and qtype == "A"
            tags = (depth_tag, "classic") if classic else (depth_tag,)
            jobs.append(dns.lookup_udp(host, qtype, resolver, timeout=cfg.timeouts.dns,
                                       tries=cfg.dns.tries, clock=clock, tags=tags,
                                       channels=ctx.dns_channels))
    lookups = tuple(await asyncio.gather(*jobs))
    for lookup in lookups:
        if lookup.engine == "udp":  # getaddrinfo's traffic is the system resolver's
            traffic.charge_dns(host, [(a.answer_type, a.value) for a in lookup.answers],
                               answered=lookup.failure in _ANSWERED)
    addresses = list(dict.fromkeys(a for lookup in lookups for a in lookup.addresses))
    if addresses:
        return Resolution(lookups, addresses, None)
    return Resolution(lookups, [], _failure(lookups))


def _failure(lookups: tuple[dns.DnsLookup, ...]) -> str:
    """The first failing plain lookup's failure: an encrypted resolver's says something
    about that resolver, not the name (ooni/probe#2274), so it is the last resort."""
    plain = [lk.failure for lk in lookups if lk.failure and lk.engine not in ENCRYPTED_ENGINES]
    encrypted = [lk.failure for lk in lookups if lk.failure]
    return next(iter(plain + encrypted), failures.DNS_NO_ANSWER)


# --------------------------------------------------------------------------- dial, secure


@dataclass(frozen=True, slots=True)
class Skipped:
    """An address the dial rule refused: no connect was made, and the record says why
    (``x_skipped``), so a refused dial is never an empty record."""

    ip: str
    port: int | None
    reason: str  # "loopback", "unspecified" or, for the helper, "special-purpose"

    def archival(self) -> dict[str, object]:
        return {"ip": self.ip, "port": self.port, "failure": failures.ADDRESS_NOT_DIALLED,
                "reason": self.reason}


def _refusal(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if addr.is_loopback:
        return "loopback"
    return "unspecified" if addr.is_unspecified else "special-purpose"


@dataclass(slots=True, kw_only=True)
class Measured:
    """The steps one measurement recorded, in the order made, and its transaction ids (a
    connection's connect, handshake and exchange share one)."""

    ctx: ProbeContext
    clock: Stopwatch
    queries: list[dns.DnsLookup] = field(default_factory=list)
    connects: list[tcp.TcpConnect] = field(default_factory=list)
    handshakes: list[tls.TlsHandshake] = field(default_factory=list)
    sni_checks: list[tls.TlsHandshake] = field(default_factory=list)
    skipped: dict[tuple[str, int | None], Skipped] = field(default_factory=dict)
    next_tid: int = 1

    def transaction_id(self) -> int:
        self.next_tid += 1
        return self.next_tid - 1


@dataclass(slots=True)
class Connection:
    """An open connection, with the transaction id its steps share; ``alpn`` once secured."""

    transport: asyncio.Transport
    held: tcp.HeldProtocol
    connect: tcp.TcpConnect
    tid: int
    ip: str
    alpn: str = ""

    @property
    def address(self) -> str:
        return self.connect.address


def dialable(m: Measured, addresses: Iterable[str], port: int | None) -> list[str]:
    """The ``addresses`` the dial rule allows; each refused one is noted in ``m.skipped``."""
    allowed = []
    for ip in addresses:
        if is_dialable(ip, m.ctx):
            allowed.append(ip)
        else:
            m.skipped.setdefault((ip, port), Skipped(ip, port, _refusal(ip)))
    return allowed


def skipped_keys(m: Measured) -> dict[str, list[dict[str, object]]]:
    """``x_skipped`` for the test keys, only when an address was refused (records that
    dialled everything keep their shape)."""
    if not m.skipped:
        return {}
    return {"x_skipped": [s.archival() for s in m.skipped.values()]}


async def dial(m: Measured, ip: str, port: int, *, tags: tuple[str, ...] = (),
               record: bool = True) -> Connection | tcp.TcpConnect:
    """TCP connect with a new transaction id (recorded in ``connects`` unless ``record`` is
    off); the open connection, or the failed connect."""
    cfg = m.ctx.config
    tid = m.transaction_id()
    result, transport, held = await tcp.connect(
        ip, port, timeout=cfg.timeouts.connect, clock=m.clock, transaction_id=tid, tags=tags,
        source=m.ctx.source_address)
    if record:
        m.connects.append(result)
    if transport is None or held is None:
        return result
    return Connection(transport, held, result, tid, ip)


async def secure(m: Measured, conn: Connection, *, server_name: str, context: ssl.SSLContext,
                 tags: tuple[str, ...] = (), record: bool = True
                 ) -> tuple[tls.TlsHandshake, asyncio.Transport | None]:
    """TLS handshake on ``conn`` (recorded in ``handshakes`` unless ``record`` is off);
    the TLS transport, or None and the connection closed."""
    cfg = m.ctx.config
    shake, tls_transport = await tls.handshake(
        conn.transport, conn.held, address=conn.address, server_name=server_name,
        context=context, timeout=cfg.timeouts.tls, clock=m.clock,
        max_chain_bytes=cfg.tls.max_chain_bytes, transaction_id=conn.tid, tags=tags)
    if record:
        m.handshakes.append(shake)
    if tls_transport is None:
        await close_transport(conn.transport)
    else:
        conn.alpn = shake.negotiated_protocol
    return shake, tls_transport


# --------------------------------------------------------------------------- SNI check


def needs_sni_check(shake: tls.TlsHandshake, throttle_seconds: float | None = None) -> bool:
    """A handshake failure that SNI filtering causes (reset, stall, EOF); with
    ``throttle_seconds`` (web_connectivity), a handshake that slow too."""
    if shake.failure in failures.SNI_CHECK_FAILURES:
        return True
    return (throttle_seconds is not None and shake.failure is None
            and shake.t - shake.t0 >= throttle_seconds)


async def sni_check(m: Measured, ip: str, port: int, *,
                    record_connect: bool = False) -> tls.TlsHandshake:
    """Repeat the handshake to the same address with the benign SNI, into ``sni_checks``:
    tells SNI filtering (benign works) from a dead server (benign fails too), and gives
    throttling a baseline.

    web_connectivity keeps the benign connect in the check only: a failed connect is a check
    with its transaction id and the ``step=tcp`` tag. The endpoint experiments
    (``record_connect``) put it in ``connects``, whose entry carries the transaction id.
    """
    cfg = m.ctx.config
    benign = cfg.analysis.benign_sni
    conn = await dial(m, ip, port, tags=("sni=benign",), record=record_connect)
    if isinstance(conn, tcp.TcpConnect):
        shake = tls.TlsHandshake(
            address=conn.address, server_name=benign, failure=conn.failure, t0=conn.t0,
            t=conn.t, transaction_id=0 if record_connect else conn.transaction_id,
            tags=("sni=benign", "step=tcp"))
    else:
        shake, tls_transport = await secure(m, conn, server_name=benign,
                                            context=m.ctx.benign_context,
                                            tags=("sni=benign",), record=False)
        await close_transport(tls_transport)  # a failed handshake closed the connection
    m.sni_checks.append(shake)
    return shake


# --------------------------------------------------------------------------- control


def start_control(ctx: ProbeContext, uri: str, addresses: list[str],
                  port: int | None) -> asyncio.Task[ControlResult] | None:
    """Ask the helper(s) about ``uri`` while the probe measures it (never blocks it); the
    probe's ``addresses`` go along as ``host:port`` endpoints (none without a port)."""
    if ctx.control is None:
        return None
    endpoints = [] if port is None else [join_hostport(ip, port) for ip in addresses]
    return asyncio.ensure_future(ctx.control.query(uri, endpoints))
