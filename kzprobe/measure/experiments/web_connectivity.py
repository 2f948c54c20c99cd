"""The ``web_connectivity`` experiment for http(s) URLs: DNS, then TCP/TLS per address, then GET.

Follows OONI Web Connectivity LTE's shape: every resolver's answers are measured, every
address gets a TCP connect (and, for https, a TLS handshake with SNI = the URL host),
and the first connection that works carries the GET. Redirects are followed by hand,
each hop measured the same way, up to ``limits.max_redirects``.

HTTP/3 (OONI LTE): when a hop's response advertises ``Alt-Svc: h3`` on its own host (or
with ``[http3] always``), that URL is fetched once more over QUIC from the address that
served it: ``quic_handshakes`` and a ``requests`` entry with ``network: "udp"``, placed
after the TCP hops so ``requests[0]`` stays the final TCP hop the OONI analysis reads.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from kzprobe import failures
from kzprobe.config import Config
from kzprobe.measure.context import (
    ControlResult,
    ProbeContext,
    Stopwatch,
    close_transport,
    is_ip_literal,
)
from kzprobe.measure.flow import (
    Connection,
    Measured,
    Resolution,
    dial,
    dialable,
    needs_sni_check,
    resolve,
    secure,
    skipped_keys,
    sni_check,
    start_control,
)
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import http, quic, tcp
from kzprobe.netaddr import split_hostport
from kzprobe.targets import Target, parse_target

MAX_ENDPOINTS = 8  # addresses dialled per hop (bounded even if DNS returns hundreds)
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
Http3Mode = Literal["off", "alt-svc", "always"]  # when to try HTTP/3 after the TCP fetch


@dataclass(slots=True)
class FetchLimits:
    """Bounds the test helper puts on one request's fetch, across all its redirect hops.

    Passed to :meth:`WebConnectivity.measure` per request, not part of the shared
    ProbeContext: each helper request has its own. The probe passes none (its own
    limits.body_bytes and max_redirects apply).
    """

    remaining: int  # body bytes still allowed
    ports: frozenset[int]  # ports a hop may dial

    @property
    def spent_all(self) -> bool:
        return self.remaining <= 0


@dataclass(slots=True, kw_only=True)
class _Flow(Measured):
    """Everything measured for one target, across redirect hops."""

    requests: list[http.HttpTransaction] = field(default_factory=list)
    resolved: dict[str, Resolution] = field(default_factory=dict)
    dns_failure: str | None = None
    last_hop_failure: str | None = None
    control_task: asyncio.Task[ControlResult] | None = None
    limits: FetchLimits | None = None  # the helper's bounds on this fetch; None for the probe
    body_bytes: int | None = None  # the target group's body cap (every hop); None: [limits]
    http3: Http3Mode = "alt-svc"
    quic_handshakes: list[quic.QuicHandshake] = field(default_factory=list)
    h3_requests: list[http.HttpTransaction] = field(default_factory=list)
    h3_endpoint: str | None = None  # host:port an Alt-Svc advertised


async def _resolve(flow: _Flow, host: str, depth: int) -> Resolution:
    """Addresses for ``host`` from every resolver (once per host across hops), and the
    failure if there were none."""
    if is_ip_literal(host):
        return Resolution((), [host], None)
    if host not in flow.resolved:
        found = await resolve(host, flow.ctx, flow.clock, depth=depth)
        flow.queries.extend(found.lookups)
        flow.resolved[host] = found
    return flow.resolved[host]


async def _dial(flow: _Flow, target: Target, ip: str, tags: tuple[str, ...],
                context: ssl.SSLContext | None) -> Connection | str:
    """Connect to ``ip`` (and, with a context, handshake with SNI = the URL host), recording
    each step; the open connection, or the failure string of the step that failed."""
    conn = await dial(flow, ip, target.port, tags=tags)
    if isinstance(conn, tcp.TcpConnect):
        return conn.failure or failures.unknown("no connection")
    if context is None:
        return conn
    shake, tls_transport = await secure(flow, conn, server_name=target.host, context=context,
                                        tags=tags)
    if tls_transport is None:
        return shake.failure or failures.unknown("no handshake")
    conn.transport = tls_transport
    return conn


async def _open(flow: _Flow, target: Target, ip: str, depth: int,
                winner: asyncio.Future[Connection]) -> str | None:
    """Connect (and handshake) to one address; offer the connection to carry the GET."""
    context = flow.ctx.verify_context if target.scheme == "https" else None
    tags = (f"depth={depth}", "fetch_body=true")
    async with flow.ctx.host_limiter.slot(ip):
        conn = await _dial(flow, target, ip, tags, context)
    if isinstance(conn, str):
        return conn
    if winner.done():
        await close_transport(conn.transport)
    else:
        winner.set_result(conn)
    return None


async def _hop(flow: _Flow, target: Target, depth: int) -> http.HttpTransaction | None:
    """Measure one URL hop; return its transaction, or None if nothing could connect."""
    found = await _resolve(flow, target.host, depth)
    resolved, dns_failure = found.addresses, found.failure
    if depth == 0:
        flow.dns_failure = dns_failure
        flow.control_task = start_control(flow.ctx, target.url, resolved[:MAX_ENDPOINTS],
                                          target.port)
    addresses = dialable(flow, resolved, target.port)
    if not addresses:
        # OONI: no GET without an address. At depth 0 the DNS keys say why; on a redirect
        # hop the hop's DNS failure is the HTTP failure. Addresses we may not dial
        # (loopback; for the helper, any special-purpose range) are a bogon failure.
        refused = bool(resolved) and (depth > 0 or flow.ctx.may_dial is not None)
        flow.last_hop_failure = failures.DNS_BOGON_ERROR if refused else (
            dns_failure if depth > 0 else None)
        return None
    winner: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
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


async def _get(flow: _Flow, target: Target, conn: Connection, depth: int) -> http.HttpTransaction:
    cfg = flow.ctx.config
    limits = flow.limits
    body_limit = _body_limit(flow)
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
            transaction_id=conn.tid,
            tags=(f"depth={depth}", "fetch_body=true"),
        )
    if limits is not None and transaction.response is not None:
        limits.remaining -= len(transaction.response.body)
    return transaction


def _body_limit(flow: _Flow) -> int:
    cap = flow.body_bytes or flow.ctx.config.limits.body_bytes
    return cap if flow.limits is None else min(cap, max(flow.limits.remaining, 0))


def _h3_from_alt_svc(flow: _Flow) -> tuple[str, str, int] | None:
    """(url, ip, port) of the first hop whose response advertised h3 on its own host."""
    for request in flow.requests:
        port = quic.advertised_h3(request.response.header("alt-svc") or "") \
            if request.response is not None and request.url.startswith("https://") else None
        where = split_hostport(request.address)
        if port is not None and where is not None:
            flow.h3_endpoint = f"{urlsplit(request.url).hostname}:{port}"
            return request.url, where[0], port
    return None


def _h3_always(flow: _Flow, target: Target) -> tuple[str, str, int] | None:
    """(url, ip, port) for ``[http3] always``: the input URL, at the address that served it
    over TCP, else the first address resolved for it."""
    first = flow.requests[0] if flow.requests else None
    where = split_hostport(first.address) if first is not None else None
    if where is not None:
        return target.url, where[0], target.port
    found = flow.resolved.get(target.host)
    addresses = [target.host] if is_ip_literal(target.host) else (
        found.addresses if found is not None else [])
    allowed = dialable(flow, addresses, target.port)
    return (target.url, allowed[0], target.port) if allowed else None


async def _http3(flow: _Flow, target: Target) -> None:
    """One HTTP/3 fetch over QUIC when advertised (or always): handshake and GET recorded."""
    if flow.http3 == "off" or target.scheme != "https" or _body_limit(flow) <= 0:
        return
    found = _h3_from_alt_svc(flow)
    if found is None and flow.http3 == "always":
        found = _h3_always(flow, target)
    if found is None:
        return
    url, ip, port = found
    if flow.limits is not None and port not in flow.limits.ports:
        return  # the helper dials only its allowed ports, UDP too
    cfg = flow.ctx.config
    tags = ("depth=0", "fetch_body=true", "network=udp")
    host = urlsplit(url).hostname or target.host
    async with flow.ctx.host_limiter.slot(ip):
        shake, transaction = await quic.exchange(
            ip, port, server_name=host, clock=flow.clock, timeout=cfg.timeouts.tls,
            ca_file=cfg.tls.ca_file, max_chain_bytes=cfg.tls.max_chain_bytes,
            source=flow.ctx.source_address, transaction_id=flow.transaction_id(), tags=tags,
            get=quic.Get(url=url, timeout=cfg.timeouts.http, body_limit=_body_limit(flow),
                         tags=tags))
    flow.quic_handshakes.append(shake)
    if transaction is not None:
        flow.h3_requests.append(transaction)
        if flow.limits is not None and transaction.response is not None:
            flow.limits.remaining -= len(transaction.response.body)


async def _fetch_fresh(flow: _Flow, target: Target, conn: Connection,
                       depth: int) -> http.HttpTransaction | None:
    """Re-dial with ALPN http/1.1 only, for servers that picked h2 in the measured handshake."""
    await close_transport(conn.transport)
    tags = (f"depth={depth}", "fetch_body=true", "alpn=http/1.1")
    fresh = await _dial(flow, target, conn.ip, tags, flow.ctx.http11_context)
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
    limits = flow.limits
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
    throttle = cfg.analysis.throttle_min_seconds
    addresses = {(c.ip, c.port) for h in flow.handshakes
                 if "depth=0" in h.tags and needs_sni_check(h, throttle)
                 for c in flow.connects if c.transaction_id == h.transaction_id}
    addresses |= {(c.ip, c.port) for q in flow.requests if _slow_request(q, cfg)
                  for c in flow.connects if c.transaction_id == q.transaction_id}
    await asyncio.gather(*(sni_check(flow, ip, port) for ip, port in sorted(addresses)))


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

    async def measure(self, target: Target, ctx: ProbeContext, clock: Stopwatch, *,
                      resolution: Resolution | None = None,
                      limits: FetchLimits | None = None,
                      http3: Http3Mode | None = None) -> dict[str, Any]:
        """The URL's test_keys; ``resolution``: its host's, made already, ``limits``: the
        bounds on this fetch, ``http3``: when to try HTTP/3 (all from the helper; the probe's
        mode follows ``[http3] always``)."""
        if http3 is None:
            http3 = "always" if ctx.config.http3.always else "alt-svc"
        flow = _Flow(ctx=ctx, clock=clock, limits=limits, body_bytes=target.body_bytes,
                     http3=http3)
        if resolution is not None:
            flow.queries.extend(resolution.lookups)
            flow.resolved[target.host] = resolution
        try:
            await _follow(flow, target)
            await _http3(flow, target)
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
        "requests": [r.archival() for r in reversed(flow.requests)]
        + [quic.request_archival(r) for r in flow.h3_requests],
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
        **skipped_keys(flow),
        **_quic_keys(flow),
    }


def _quic_keys(flow: _Flow) -> dict[str, Any]:
    """``quic_handshakes`` (and the Alt-Svc found) only when HTTP/3 was tried: records of
    sites without it keep their shape."""
    if not flow.quic_handshakes:
        return {}
    return {"quic_handshakes": [h.archival() for h in flow.quic_handshakes],
            "x_h3_endpoint": flow.h3_endpoint}


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
