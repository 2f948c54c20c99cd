"""What every probe shares: the measurement clock, the experiment protocol, the context.

A probe step (``dns``, ``tcp``, ``tls``, ``http``) speaks one protocol and returns a
typed, archival-ready result; an *experiment* (``web_connectivity``, and later the
endpoint experiments) composes steps for one target. The engine only knows
:class:`Experiment`; everything it passes down travels in :class:`ProbeContext`.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import ipaddress
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kzprobe.measure.clock import Stopwatch as Stopwatch  # re-exported: the steps' import
from kzprobe.measure.steps.dns import DnsChannels

if TYPE_CHECKING:
    import aiohttp

    from kzprobe.config import Config
    from kzprobe.measure.ratelimit import HostLimiter
    from kzprobe.targets import Target


# Per-connection scratch space reachable from protocol callbacks. Transports copy the
# context when they are created, so it is set around connect() and read back later.
connection_scratch: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "kzprobe_connection_scratch", default=None
)


def maybe_binary(data: bytes) -> str | dict[str, str]:
    """OONI's MaybeBinaryString: text if valid UTF-8 without NULs, else base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}
    if "\x00" in text:
        return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}
    return text


@dataclass(frozen=True, slots=True)
class ControlResult:
    """A test helper's answer (its THResponse), or why there is none."""

    response: dict[str, Any] | None
    failure: str | None
    helper_url: str | None


class Control(Protocol):
    """The control vantage as experiments use it (:class:`kzprobe.measure.control.ControlClient`
    implements it; named here as a protocol so the context does not import the client)."""

    async def query(self, url: str, endpoints: Sequence[str]) -> ControlResult:
        """Ask the helper(s) about ``url`` and the probe's ``ip:port`` endpoints."""
        ...

    async def aclose(self) -> None:
        ...


@dataclass(slots=True, kw_only=True)
class ProbeContext:
    """Shared, long-lived resources a measurement needs; built once by the engine."""

    config: Config
    verify_context: ssl.SSLContext  # trust: certifi or tls.ca_file; never the OS store
    session: aiohttp.ClientSession  # dials nothing itself: connections are handed over
    host_limiter: HostLimiter
    http11_context: ssl.SSLContext  # verifying, ALPN http/1.1 only: re-dial when a server picks h2
    benign_context: ssl.SSLContext  # not verifying: handshakes with a benign SNI (SNI checks)
    may_dial: Callable[[str], bool] | None = None  # the helper's SSRF guard; None: probe rules
    control: Control | None = None  # the test helper(s), when configured
    source_address: str | None = None  # local address to dial from (multi-homed hosts)
    dns_channels: DnsChannels = field(default_factory=DnsChannels)
    extra: dict[str, Any] = field(default_factory=dict)


def is_ip_literal(host: str) -> bool:
    """An IP address written as the host (no DNS needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_dialable(ip: str, ctx: ProbeContext) -> bool:
    """The one dial rule. OONI never dials loopback; ``analysis.not_bogon`` lifts that for
    labs and tests. The control helper passes its own, stricter policy (``may_dial``: no
    special-purpose addresses)."""
    if ctx.may_dial is not None:
        return ctx.may_dial(ip)
    addr = _loopback_or_unspecified(ip)
    return addr is None or any(addr in net for net in ctx.config.analysis.not_bogon)


@functools.lru_cache(maxsize=4096)
def _loopback_or_unspecified(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed address if loopback or unspecified, else None (cached: parsing is slow)."""
    addr = ipaddress.ip_address(ip)
    return addr if addr.is_loopback or addr.is_unspecified else None


class Experiment(Protocol):
    """One kind of measurement for one target, e.g. ``web_connectivity`` for http(s) URLs."""

    test_name: str
    test_version: str

    async def measure(
        self, target: Target, ctx: ProbeContext, clock: Stopwatch
    ) -> Mapping[str, Any]:
        """Return the experiment's ``test_keys``; failures are recorded inside, never raised."""
        ...

    def failure_keys(self, target: Target, failure: str) -> dict[str, Any]:
        """The ``test_keys`` of a run that ended before it could write its own (the
        deadline, a crash, shutdown): the experiment's record shape, holding ``failure``."""
        ...


async def close_transport(transport: asyncio.BaseTransport | None) -> None:
    """Abort a transport without waiting for a TLS close_notify the peer may never send."""
    if transport is None:
        return
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
    else:
        transport.close()
