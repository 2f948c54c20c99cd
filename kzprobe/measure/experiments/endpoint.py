"""Endpoint experiments: is this ``host:port`` reachable with its own protocol?

Shared machinery for every endpoint scheme (``tcp``, ``tls``, ``openvpn+*``,
``wireguard``, ``tor``, ``stun``) and the two simplest experiments, ``tcpconnect`` and
``tlshandshake``. A run resolves the host (if it is a name), probes up to
:data:`MAX_ADDRESSES` addresses concurrently with the scheme's ``probe_address``, asks
the control helper about the same endpoint meanwhile, and writes one record: the steps
(``queries``, ``tcp_connect``, ``tls_handshakes``, ``network_events`` and the protocol's
own exchange), per-address outcomes, and ``reachable``/``failure``/``failed_operation``.
The verdict (``interference``) is added by :mod:`kzprobe.verdict.analysis.endpoints`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from kzprobe import failures
from kzprobe.errors import classify
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
    dialable,
    needs_sni_check,
    skipped_keys,
    start_control,
)
from kzprobe.measure.flow import dial as flow_dial
from kzprobe.measure.flow import resolve as resolve_host
from kzprobe.measure.flow import secure as flow_secure
from kzprobe.measure.flow import sni_check as flow_sni_check
from kzprobe.measure.registry import UDP_SCHEMES, spec_for
from kzprobe.measure.steps import tcp, tls
from kzprobe.measure.steps.udp import NetEvent, format_address
from kzprobe.targets import Target

MAX_ADDRESSES = 4  # addresses probed per endpoint (bounded even if DNS returns hundreds)


class ProtocolError(Exception):
    """A reply that is not the protocol's: classified as ``unknown_failure: ...``."""


def protocol_failure(message: str) -> str:
    """The OONI failure string for a reply that is not the protocol's."""
    return classify(ProtocolError(message))


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What probing one address of the endpoint found."""

    address: str
    failure: str | None
    failed_operation: str | None = None  # tcp_connect | tls_handshake | <protocol step>
    details: Mapping[str, Any] = field(default_factory=dict)  # the protocol's own keys
    t0: float = 0.0
    t: float = 0.0

    def archival(self) -> dict[str, Any]:
        return {"address": self.address, "failure": self.failure,
                "failed_operation": self.failed_operation, "t0": self.t0, "t": self.t}


@dataclass(slots=True, kw_only=True)
class Flow(Measured):
    """Everything measured for one endpoint target."""

    target: Target
    events: list[NetEvent] = field(default_factory=list)
    unverified: set[int] = field(default_factory=set)  # transactions handshaking with verify off


ProbeAddress = Callable[[Flow, str], Awaitable[Outcome]]


async def resolve(flow: Flow, given: Resolution | None = None) -> tuple[list[str], str | None]:
    """The host's addresses from every resolver (a literal IP is its own answer); the
    helper passes the resolution it has made already (``given``)."""
    host = flow.target.host
    if is_ip_literal(host):
        return [host], None
    found = given if given is not None else await resolve_host(host, flow.ctx, flow.clock)
    flow.queries.extend(found.lookups)
    return found.addresses, found.failure


def control_uri(target: Target) -> str:
    """The endpoint URI as the helper gets it: local key-file parameters stay here (the
    helper uses keys of its own, ``[helper] wireguard_peers``)."""
    params = [(k, v) for k, v in target.params if not k.endswith("_file")]
    if len(params) == len(target.params):
        return target.url
    base = target.url.split("?", 1)[0]
    return base + ("?" + "&".join(f"{k}={quote(v, safe='/+=:')}" for k, v in params)
                   if params else "")


def _start_control(flow: Flow, addresses: list[str]) -> asyncio.Task[ControlResult] | None:
    """Ask the helper about the same endpoint URI (a kzprobe helper runs the same
    experiment from outside; any OONI helper still answers the ``tcp_connect`` part)."""
    target = flow.target
    port = None if target.scheme in UDP_SCHEMES else target.port
    return start_control(flow.ctx, control_uri(target), addresses[:MAX_ADDRESSES], port)


async def _probe_all(flow: Flow, addresses: list[str], probe: ProbeAddress) -> list[Outcome]:
    async def one(ip: str) -> Outcome:
        async with flow.ctx.host_limiter.slot(ip):
            return await probe(flow, ip)

    return list(await asyncio.gather(*(one(ip) for ip in addresses[:MAX_ADDRESSES])))


def _summary(outcomes: list[Outcome], dns_failure: str | None,
             refused: bool) -> tuple[bool, str | None, str | None]:
    """reachable, failure, failed_operation over all addresses (any success wins)."""
    if any(o.failure is None for o in outcomes):
        return True, None, None
    if outcomes:
        first = outcomes[0]
        return False, first.failure, first.failed_operation
    if refused:
        return False, failures.DNS_BOGON_ERROR, "resolve"
    return False, dns_failure or failures.DNS_NO_ANSWER, "resolve"


async def run(target: Target, ctx: ProbeContext, clock: Stopwatch, probe: ProbeAddress, *,
              protocol_key: str, resolution: Resolution | None = None) -> dict[str, Any]:
    """Measure one endpoint target with ``probe`` per address; return its test_keys."""
    flow = Flow(target=target, ctx=ctx, clock=clock)
    control_task: asyncio.Task[ControlResult] | None = None
    try:
        resolved, dns_failure = await resolve(flow, resolution)
        addresses = dialable(flow, resolved, target.port)
        control_task = _start_control(flow, addresses)
        outcomes = await _probe_all(flow, addresses, probe)
        control = await control_task if control_task is not None else None
    finally:
        if control_task is not None and not control_task.done():
            control_task.cancel()
    reachable, failure, operation = _summary(outcomes, dns_failure, bool(resolved))
    keys = _keys(flow, outcomes, protocol_key)
    keys.update(reachable=reachable, failure=failure, failed_operation=operation,
                dns_experiment_failure=dns_failure)
    if control is not None:
        keys.update(control=control.response, control_failure=control.failure,
                    x_control_helper=control.helper_url)
    return keys


def _shake(flow: Flow, shake: tls.TlsHandshake) -> dict[str, Any]:
    """df-006, with ``no_tls_verify`` true where the chain was recorded but not verified."""
    return {**shake.archival(), "no_tls_verify": shake.transaction_id in flow.unverified}


def _keys(flow: Flow, outcomes: list[Outcome], protocol_key: str) -> dict[str, Any]:
    keys = _empty_keys(flow.target, protocol_key)
    keys.update({
        "queries": [q.archival() for q in flow.queries],
        "tcp_connect": [c.archival() for c in flow.connects],
        "tls_handshakes": [_shake(flow, h) for h in flow.handshakes],
        "network_events": [e.archival() for e in sorted(flow.events, key=lambda e: e.t0)],
        protocol_key: [dict(o.details) for o in outcomes if o.details],
        "x_endpoint_results": [o.archival() for o in outcomes],
        "x_sni_checks": [_shake(flow, h) for h in flow.sni_checks],
        **skipped_keys(flow),
    })
    return keys


def _empty_keys(target: Target, protocol_key: str) -> dict[str, Any]:
    return {
        "endpoint": format_address(target.host, target.port),
        "x_protocol": target.scheme,
        "queries": [],
        "tcp_connect": [],
        "tls_handshakes": [],
        "network_events": [],
        protocol_key: [],
        "x_endpoint_results": [],
        "x_sni_checks": [],
        "control": None,
        "control_failure": None,
        "interference": [],
    }


def failure_keys(target: Target, failure: str, protocol_key: str) -> dict[str, Any]:
    """The keys of a run the engine ended (deadline, crash, shutdown): the endpoint shape
    with no observations, unreachable, ``failed_operation`` OONI's ``top_level`` (no step
    of the endpoint failed; the run as a whole did)."""
    keys = _empty_keys(target, protocol_key)
    keys.update(reachable=False, failure=failure, failed_operation="top_level",
                dns_experiment_failure=None, blocking=None, accessible=None)
    return keys


class EndpointExperiment:
    """What the endpoint experiments share: :func:`run` with the experiment's
    ``probe_address``, and the same record shape when the engine ends a run early.

    An experiment names its exchange's key (``protocol_key``) and may add keys of its own
    derived from the common ones (:meth:`finish`), in both cases.
    """

    test_name: str
    test_version: str
    protocol_key: str

    async def measure(self, target: Target, ctx: ProbeContext, clock: Stopwatch, *,
                      resolution: Resolution | None = None) -> dict[str, Any]:
        """The endpoint's test_keys; ``resolution``: the host's, made already (the helper)."""
        keys = await run(target, ctx, clock, self.probe_address, protocol_key=self.protocol_key,
                         resolution=resolution)
        return self.finish(target, keys)

    def failure_keys(self, target: Target, failure: str) -> dict[str, Any]:
        return self.finish(target, failure_keys(target, failure, self.protocol_key))

    def finish(self, target: Target, keys: dict[str, Any]) -> dict[str, Any]:
        return keys

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        raise NotImplementedError


# --------------------------------------------------------------------------- shared steps


Dialled = Connection  # an open connection of a probe (the experiments' name for it)


async def dial(flow: Flow, ip: str, tags: tuple[str, ...] = ()) -> Dialled | Outcome:
    """TCP connect (recorded); an :class:`Outcome` if it failed."""
    conn = await flow_dial(flow, ip, flow.target.port, tags=tags)
    if isinstance(conn, tcp.TcpConnect):
        return Outcome(address=conn.address, failure=conn.failure,
                       failed_operation="tcp_connect", t0=conn.t0, t=conn.t)
    return conn


async def secure(flow: Flow, conn: Dialled, *, server_name: str, verify: bool,
                 tags: tuple[str, ...] = ()) -> tuple[tls.TlsHandshake, asyncio.Transport | None]:
    """TLS handshake on ``conn`` (recorded; ``no_tls_verify`` unless ``verify``); closes
    the connection if it failed."""
    context = flow.ctx.verify_context if verify else flow.ctx.benign_context
    if not verify:
        flow.unverified.add(conn.tid)
    return await flow_secure(flow, conn, server_name=server_name, context=context, tags=tags)


async def sni_check(flow: Flow, ip: str) -> None:
    """Handshake again with the benign SNI: a server that answers it is not down, so a
    failure with the real SNI is the name's (self-proving SNI filtering). The benign
    connect is in ``tcp_connect``; the check is ``no_tls_verify``."""
    shake = await flow_sni_check(flow, ip, flow.target.port, record_connect=True)
    if "step=tcp" not in shake.tags:
        flow.unverified.add(shake.transaction_id)


# --------------------------------------------------------------------------- tcp:// tls://


class TcpConnect(EndpointExperiment):
    """``tcp://host:port``: does a TCP connection open (OONI urlgetter's ``tcpconnect://``)."""

    test_name = spec_for("tcp").test_name  # the registry's, not repeated here
    test_version = spec_for("tcp").test_version
    protocol_key = "x_tcp"

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        await close_transport(conn.transport)
        return Outcome(address=conn.address, failure=None, t0=conn.connect.t0, t=conn.connect.t)


def _truthy(value: str | None, default: bool) -> bool:
    return default if value is None else value in ("1", "true")


class TlsHandshake(EndpointExperiment):
    """``tls://host:port?sni=NAME&verify=0``: a TLS handshake, the peer chain recorded.

    ``sni`` defaults to the host (none for a literal IP); ``verify=0`` records the chain
    without judging it (self-signed services). A reset, stall or EOF is re-tried once with
    the benign SNI (``x_sni_checks``) to tell SNI filtering from a dead server.
    """

    test_name = spec_for("tls").test_name  # the registry's, not repeated here
    test_version = spec_for("tls").test_version
    protocol_key = "x_tls"

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        target = flow.target
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        server_name = target.param("sni") or target.host
        shake, tls_transport = await secure(
            flow, conn, server_name=server_name, verify=_truthy(target.param("verify"), True))
        await close_transport(tls_transport)
        if needs_sni_check(shake):
            await sni_check(flow, ip)
        return Outcome(address=conn.address, failure=shake.failure,
                       failed_operation="tls_handshake" if shake.failure else None,
                       t0=conn.connect.t0, t=shake.t)
