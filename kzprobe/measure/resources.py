"""The long-lived measuring resources: what the probe and the helper both measure with.

One aiohttp session (it dials nothing: measured connections are handed over), the three
TLS contexts, the DNS channels, the per-IP gate and the test-helper client, built from a
:class:`~kzprobe.config.Config` by :func:`build_resources` and closed by
:meth:`Resources.aclose`. Nothing here judges: building resources loads no fingerprints,
so the internet-facing helper pays for none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kzprobe.config import Config
from kzprobe.measure.context import ProbeContext
from kzprobe.measure.control import ControlClient
from kzprobe.measure.ratelimit import HostLimiter
from kzprobe.measure.steps.dns import DnsChannels
from kzprobe.measure.steps.http import measuring_session
from kzprobe.measure.steps.tls import make_context


@dataclass(frozen=True, slots=True)
class Resources:
    """Owns what :attr:`context` hands every measurement, and closes it."""

    context: ProbeContext

    @property
    def config(self) -> Config:
        return self.context.config

    async def aclose(self) -> None:
        """Close the session, the DNS channels and the helper client (each once)."""
        await self.context.session.close()
        await self.context.dns_channels.aclose()
        if self.context.control is not None:
            await self.context.control.aclose()


def control_client(config: Config) -> ControlClient | None:
    """The THRequest client for ``control.helper_url``; None when no helper is set."""
    if not config.control.helper_urls:
        return None
    return ControlClient(config.control.helpers, timeout=config.timeouts.control,
                         concurrency=config.control.concurrency,
                         quic_always=config.http3.always)


def build_resources(config: Config, *, may_dial: Callable[[str], bool] | None = None,
                    source_address: str | None = None,
                    per_host: int | None = None) -> Resources:
    """Resources for ``config``. The helper passes its own dial policy (``may_dial``),
    ``source_address`` and per-destination limit (``per_host``; default
    ``limits.per_host``)."""
    ca_file, alpn = config.tls.ca_file, config.tls.alpn
    return Resources(ProbeContext(
        config=config,
        verify_context=make_context(ca_file=ca_file, alpn=alpn),
        http11_context=make_context(ca_file=ca_file, alpn=("http/1.1",)),
        benign_context=make_context(ca_file=ca_file, alpn=alpn, verify=False),
        session=measuring_session(),
        host_limiter=HostLimiter(config.limits.per_host if per_host is None else per_host),
        may_dial=may_dial,
        source_address=source_address,
        control=control_client(config),
        dns_channels=DnsChannels(),
    ))
