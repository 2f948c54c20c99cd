"""The ``web_connectivity`` experiment for http(s) URLs: DNS, then TCP/TLS per address, then GET.

Follows OONI Web Connectivity LTE's shape: every resolver's answers are measured, every
address gets a TCP connect (and, for https, a TLS handshake with SNI = the URL host),
and the first connection that works carries the GET. Redirects are followed by hand,
each hop measured the same way, up to ``limits.max_redirects``.
"""

from __future__ import annotations

import asyncio
import ssl
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from kzprobe import failures
from kzprobe.config import Config
from kzprobe.measure.context import (
    ControlResult,
    ProbeContext,
    Stopwatch,
    close_transport,
    is_dialable,
    is_ip_literal,
)
from kzprobe.measure.flow import resolve
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import dns, http, tcp, tls
from kzprobe.netaddr import join_hostport
from kzprobe.targets import Target, parse_target

MAX_ENDPOINTS = 8  # addresses dialled per hop (bounded even if DNS returns hundreds)
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


@dataclass(slots=True)
class FetchLimits:
    """Bounds the test helper puts on one request's fetch, across all its redirect hops.

    A context variable, not part of the shared ProbeContext: each helper request has its
    own. The probe sets none (its own limits.body_bytes and max_redirects apply).
    """

    remaining: int  # body bytes still allowed
    ports: frozenset[int]  # ports a hop may dial

    @property
    def spent_all(self) -> bool:
        return self.remaining <= 0


FETCH_LIMITS: ContextVar[FetchLimits | None] = ContextVar("kzprobe_fetch_limits", default=None)


@dataclass(slots=True)
class _Connection:
    transport: asyncio.Transport
    held: tcp.HeldProtocol
    ip: str
    address: str
    alpn: str
    transaction_id: int


@dataclass(slots=True)
class _Flow:
    """Everything measured for one target, across redirect hops."""

    ctx: ProbeContext
    clock: Stopwatch
    queries: list[dns.DnsLookup] = field(default_factory=list)
    connects: list[tcp.TcpConnect] = field(default_factory=list)
    handshakes: list[tls.TlsHandshake] = field(default_factory=list)
    requests: list[http.HttpTransaction] = field(default_factory=list)
    resolved: dict[str, list[str]] = field(default_factory=dict)
    sni_checks: list[tls.TlsHandshake] = field(default_factory=list)
    dns_failure: str | None = None
    last_hop_failure: str | None = None
    next_transaction: int = 1
    control_task: asyncio.Task[ControlResult] | None = None

    def transaction_id(self) -> int:
        self.next_transaction += 1
        return self.next_transaction - 1


async def _resolve(flow: _Flow, host: str, depth: int) -> tuple[list[str], str | None]:
    """Addresses for ``host`` from every resolver, and the failure if there were none."""
    if is_ip_literal(host):
        return [host], None
    if host in flow.resolved:
        return flow.resolved[host], None
    found = await resolve(host, flow.ctx, flow.clock, depth=depth)
    flow.queries.extend(found.lookups)
    flow.resolved[host] = found.addresses
    return found.addresses, found.failure


async def _dial(flow: _Flow, target: Target, ip: str, tid: int, tags: tuple[str, ...],
                context: ssl.SSLContext | None) -> _Connection | str:
    """Connect to ``ip`` (and, with a context, handshake with SNI = the URL host), recording
    each step; the open connection, or the failure string of the step that failed."""
    cfg = flow.ctx.config
    result, transport, held = await tcp.connect(
        ip, target.port, timeout=cfg.timeouts.connect, clock=flow.clock, transaction_id=tid,
        tags=tags, source=flow.ctx.source_address)
    flow.connects.append(result)
    if transport is None or held is None:
        return result.failure or failures.unknown("no connection")
    if context is None:
        return _Connection(transport, held, ip, result.address, "", tid)
    shake, tls_transport = await tls.handshake(
        transport, held, address=result.address, server_name=target.host, context=context,
        timeout=cfg.timeouts.tls, clock=flow.clock, max_chain_bytes=cfg.tls.max_chain_bytes,
        transaction_id=tid, tags=tags)
    flow.handshakes.append(shake)
    if tls_transport is None:
        await close_transport(transport)
        return shake.failure or failures.unknown("no handshake")
    return _Connection(tls_transport, held, ip, result.address, shake.negotiated_protocol, tid)


async def _open(flow: _Flow, target: Target, ip: str, depth: int,
                winner: asyncio.Future[_Connection]) -> str | None:
    """Connect (and handshake) to one address; offer the connection to carry the GET."""
    context = flow.ctx.verify_context if target.scheme == "https" else None
    tags = (f"depth={depth}", "fetch_body=true")
    async with flow.ctx.host_limiter.slot(ip):
        conn = await _dial(flow, target, ip, flow.transaction_id(), tags, context)
    if isinstance(conn, str):
        return conn
    if winner.done():
        await close_transport(conn.transport)
    else:
        winner.set_result(conn)
    return None


async def _hop(flow: _Flow, target: Target, depth: int) -> http.HttpTransaction | None:
    """Measure one URL hop; return its transaction, or None if nothing could connect."""
    resolved, dns_failure = await _resolve(flow, target.host, depth)
    if depth == 0:
        flow.dns_failure = dns_failure
        _start_control(flow, target, resolved)
    addresses = [ip for ip in resolved if is_dialable(ip, flow.ctx)]
    if not addresses:
        # OONI: no GET without an address. At depth 0 the DNS keys say why; on a redirect
        # hop the hop's DNS failure is the HTTP failure. Addresses we may not dial
        # (loopback; for the helper, any special-purpose range) are a bogon failure.
        refused = bool(resolved) and (depth > 0 or flow.ctx.may_dial is not None)
        flow.last_hop_failure = failures.DNS_BOGON_ERROR if refused else (
            dns_failure if depth > 0 else None)
        return None
    winner: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
    candidates = addresses[:MAX_ENDPOINTS]
    if len(candidates) == 1:  # the common case: no task per address
        opened = [await _open(flow, target, candidates[0], depth, winner)]
    else:
        opened = await asyncio.gather(
            *(_open(flow, target, ip, depth, winner) for ip in candidates))
    if not winner.done():
        flow.last_hop_failure = next((f for f in opened if f), failures.unknown("no endpoint"))
        return None
    conn = winner.result()
    if conn.alpn == "h2":  # aiohttp speaks HTTP/1.1 only: measured handshake stays, GET re-dials
        return await _fetch_fresh(flow, target, conn, depth)
    return await _get(flow, target, conn, depth)


async def _get(flow: _Flow, target: Target, conn: _Connection, depth: int) -> http.HttpTransaction:
    cfg = flow.ctx.config
    limits = FETCH_LIMITS.get()
    body_limit = cfg.limits.body_bytes if limits is None else min(cfg.limits.body_bytes,
                                                                  max(limits.remaining, 0))
    async with flow.ctx.host_limiter.slot(conn.ip):
        transaction = await http.get(
            flow.ctx.session,
            target.url,
            transport=conn.transport,
            held=conn.held,
            address=conn.address,
            alpn=conn.alpn,
            timeout=cfg.timeouts.http,
            body_limit=body_limit,
            clock=flow.clock,
            transaction_id=conn.transaction_id,
            tags=(f"depth={depth}", "fetch_body=true"),
        )
    if limits is not None and transaction.response is not None:
        limits.remaining -= len(transaction.response.body)
    return transaction


async def _fetch_fresh(flow: _Flow, target: Target, conn: _Connection,
                       depth: int) -> http.HttpTransaction | None:
    """Re-dial with ALPN http/1.1 only, for servers that picked h2 in the measured handshake."""
    await close_transport(conn.transport)
    tags = (f"depth={depth}", "fetch_body=true", "alpn=http/1.1")
    fresh = await _dial(flow, target, conn.ip, flow.transaction_id(), tags,
                        flow.ctx.http11_context)
    if isinstance(fresh, str):
        flow.last_hop_failure = fresh
        return None
    return await _get(flow, target, fresh, depth)


def _redirect_target(response: http.HttpResponse, current: Target) -> Target | str | None:
    """The next hop, a failure string for an unusable Location, or None for a final response."""
    if response.code not in REDIRECT_CODES:
        return None
    location = response.header("location")
    if not location:
        return None
    try:
        return parse_target(urljoin(current.url, location.strip()), origin="redirect")
    except ValueError:
        return failures.HTTP_INVALID_REDIRECT_LOCATION_HOST


async def _follow(flow: _Flow, target: Target) -> None:
    current = target
    limits = FETCH_LIMITS.get()
    for depth in range(flow.ctx.config.limits.max_redirects + 1):
        refusal = _refused_by_limits(limits, current, depth)
        if refusal is not None:
            flow.last_hop_failure = refusal
            return
        transaction = await _hop(flow, current, depth)
        if transaction is None:
            return
        flow.requests.append(transaction)
        if transaction.failure or transaction.response is None:
            return
        nxt = _redirect_target(transaction.response, current)
        if nxt is None:
            return
        if isinstance(nxt, str):
            flow.last_hop_failure = nxt
            return
        current = nxt
    flow.last_hop_failure = (
        failures.unknown(f"stopped after {flow.ctx.config.limits.max_redirects} redirects")
    )


def _refused_by_limits(limits: FetchLimits | None, target: Target, depth: int) -> str | None:
    """Why the helper may not fetch this hop (a port it does not dial, no bytes left)."""
    if limits is None:
        return None
    if target.port not in limits.ports:
        return failures.unknown(f"port {target.port} not allowed by the helper")
    if depth > 0 and limits.spent_all:
        return failures.unknown("helper fetch budget spent")
    return None


def _start_control(flow: _Flow, target: Target, resolved: list[str]) -> None:
    """Ask the helper(s) about this URL while the probe measures it (never blocks it)."""
    control = flow.ctx.control
    if control is None:
        return
    endpoints = [join_hostport(ip, target.port) for ip in resolved[:MAX_ENDPOINTS]]
    flow.control_task = asyncio.ensure_future(control.query(target.url, endpoints))


def _needs_sni_check(shake: tls.TlsHandshake, cfg: Config) -> bool:
    if "depth=0" not in shake.tags:
        return False
    slow = shake.failure is None and shake.t - shake.t0 >= cfg.analysis.throttle_min_seconds
    return shake.failure in failures.SNI_CHECK_FAILURES or slow


async def _sni_check(flow: _Flow, ip: str, port: int) -> None:
    """Repeat the handshake to the same address with a benign SNI: tells SNI filtering
    (benign works) from a dead server (benign fails too), and gives throttling a baseline."""
    cfg = flow.ctx.config
    tid = flow.transaction_id()
    result, transport, held = await tcp.connect(ip, port, timeout=cfg.timeouts.connect,
                                                clock=flow.clock, transaction_id=tid,
                                                source=flow.ctx.source_address)
    if transport is None or held is None:
        flow.sni_checks.append(tls.TlsHandshake(
            address=result.address, server_name=cfg.analysis.benign_sni, failure=result.failure,
            t0=result.t0, t=result.t, transaction_id=tid, tags=("sni=benign", "step=tcp")))
        return
    shake, tls_transport = await tls.handshake(
        transport, held, address=result.address, server_name=cfg.analysis.benign_sni,
        context=flow.ctx.benign_context, timeout=cfg.timeouts.tls, clock=flow.clock,
        max_chain_bytes=cfg.tls.max_chain_bytes, transaction_id=tid, tags=("sni=benign",))
    await close_transport(tls_transport or transport)
    flow.sni_checks.append(shake)


def _slow_request(request: http.HttpTransaction, cfg: Config) -> bool:
    """A first byte or a 64 KiB body window slower than the throttling threshold."""
    limit = cfg.analysis.throttle_min_seconds
    if request.ttfb is not None and request.ttfb >= limit:
        return True
    if request.response is None or not request.body_seconds:
        return False
    windows = max(1, -(-len(request.response.body) // (64 * 1024)))
    return request.body_seconds / windows >= limit


async def _run_sni_checks(flow: _Flow, target: Target) -> None:
    cfg = flow.ctx.config
    if target.scheme != "https":
        return
    addresses = {(c.ip, c.port) for h in flow.handshakes if _needs_sni_check(h, cfg)
                 for c in flow.connects if c.transaction_id == h.transaction_id}
    addresses |= {(c.ip, c.port) for q in flow.requests if _slow_request(q, cfg)
                  for c in flow.connects if c.transaction_id == q.transaction_id}
    await asyncio.gather(*(_sni_check(flow, ip, port) for ip, port in sorted(addresses)))


async def _control(flow: _Flow) -> ControlResult | None:
    if flow.control_task is None:
        return None
    return await flow.control_task


def _http_failure(flow: _Flow) -> str | None:
    if flow.last_hop_failure is not None:
        return flow.last_hop_failure
    return flow.requests[-1].failure if flow.requests else None


class WebConnectivity:
    """OONI ``web_connectivity`` for one http(s) URL (control and verdicts added by analysis)."""

    test_name = spec_for("https").test_name  # the registry's, not repeated here
    test_version = spec_for("https").test_version

    async def measure(self, target: Target, ctx: ProbeContext, clock: Stopwatch) -> dict[str, Any]:
        flow = _Flow(ctx=ctx, clock=clock)
        try:
            await _follow(flow, target)
            await _run_sni_checks(flow, target)
            control = await _control(flow)
        finally:
            if flow.control_task is not None and not flow.control_task.done():
                flow.control_task.cancel()
        keys = _test_keys(flow)
        if control is not None:
            keys["control"] = control.response
            keys["control_failure"] = control.failure
            keys["x_control_helper"] = control.helper_url
        return keys

    def failure_keys(self, target: Target, failure: str) -> dict[str, Any]:
        """A record without observations: ``failure`` as the http_experiment_failure."""
        return {
            "queries": [],
            "tcp_connect": [],
            "tls_handshakes": [],
            "requests": [],
            "dns_experiment_failure": None,
            "http_experiment_failure": failure,
            "control": None,
            "control_failure": None,
            "blocking": None,
            "accessible": None,
            "agent": "redirect",
            "retries": None,
            "socksproxy": None,
            "client_resolver": None,
        }


def _test_keys(flow: _Flow) -> dict[str, Any]:
    final = flow.requests[-1] if flow.requests else None
    timings = _timings(flow, final)
    return {
        "agent": "redirect",
        "retries": None,
        "socksproxy": None,
        "client_resolver": None,
        "queries": [q.archival() for q in flow.queries],
        "tcp_connect": [c.archival() for c in flow.connects],
        "tls_handshakes": [h.archival() for h in flow.handshakes],
        "requests": [r.archival() for r in reversed(flow.requests)],
        "dns_experiment_failure": flow.dns_failure,
        "http_experiment_failure": _http_failure(flow),
        "control": None,
        "control_failure": None,
        "dns_consistency": None,
        "body_length_match": None,
        "body_proportion": None,
        "status_code_match": None,
        "headers_match": None,
        "title_match": None,
        "blocking": None,
        "accessible": None,
        "x_timings": timings,
        "x_sni_checks": [h.archival() for h in flow.sni_checks],
    }


def _timings(flow: _Flow, final: http.HttpTransaction | None) -> dict[str, float | None]:
    tid = final.transaction_id if final else None
    connect = next((c for c in flow.connects if c.transaction_id == tid), None)
    shake = next((h for h in flow.handshakes if h.transaction_id == tid), None)
    dns_time = max((q.t - q.t0 for q in flow.queries), default=None)
    body_rate = None
    if final and final.response and final.body_seconds:
        body_rate = round(len(final.response.body) / final.body_seconds, 1)
    return {
        "dns": round(dns_time, 6) if dns_time is not None else None,
        "connect": round(connect.t - connect.t0, 6) if connect else None,
        "tls": round(shake.t - shake.t0, 6) if shake else None,
        "ttfb": round(final.ttfb, 6) if final and final.ttfb is not None else None,
        "body_bytes_per_s": body_rate,
    }
