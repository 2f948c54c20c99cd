"""Fixtures for hostile-server tests: a Engine per test, hostile servers, bounded runs.

Each measurement runs under tracemalloc so a test can assert the bytes it cost, and
``still_works`` proves the same Engine measures a normal site afterwards. The analysis
retries are off so one measurement is one attempt (the bounds in the README are per
attempt; ``analysis.retries`` re-measures a blocked-looking result that many times).
"""

from __future__ import annotations

import resource
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kzprobe.config import Config
from kzprobe.engine import Engine, build_engine
from kzprobe.targets import parse_target
from tests.hostile.servers import Behaviour, HostileServer
from tests.servers import DnsServer, WebSite

# make_config's timeouts: dns 1, connect 2, tls 2, http 3 (seconds).
HTTP_TIMEOUT = 3.0
TLS_TIMEOUT = 2.0
DNS_TIMEOUT = 1.0
SLACK = 3.0  # the "generous bound" on top of the deadline that should fire
MEMORY_BOUND = 32 * 1024 * 1024  # traced Python heap per measurement
RSS_BOUND = 100 * 1024 * 1024  # growth of the process's peak RSS


@dataclass(frozen=True, slots=True)
class Run:
    """One measurement and what it cost."""

    record: dict[str, Any]
    seconds: float
    peak_bytes: int  # tracemalloc peak during the measurement
    rss_growth: int  # growth of ru_maxrss (bytes) during the measurement

    @property
    def keys(self) -> dict[str, Any]:
        return self.record["test_keys"]  # type: ignore[no-any-return]

    @property
    def request(self) -> dict[str, Any]:
        return self.keys["requests"][0]  # type: ignore[no-any-return]

    def report(self, name: str) -> None:
        """One line for the README table (visible with ``pytest -s``)."""
        print(f"\nBOUND {name}: {self.seconds:.2f} s, heap peak {self.peak_bytes / 1e6:.1f} MB,"
              f" maxrss +{self.rss_growth / 1e6:.0f} MB,"
              f" dns={self.keys['dns_experiment_failure']!r}"
              f" http={self.keys['http_experiment_failure']!r}")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def bounded(engine: Engine, url: str) -> Run:
    """Measure ``url`` with the clock and the allocator watching."""
    rss = _maxrss()
    tracemalloc.start()
    started = time.monotonic()
    try:
        record = await engine.measure(parse_target(url))
    finally:
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return Run(record, seconds, peak, _maxrss() - rss)


@pytest.fixture
async def probe(config_factory: Callable[..., Config], dns_server: DnsServer
                ) -> AsyncIterator[Callable[..., Engine]]:
    """A factory of engines (closed at teardown) resolving through ``dns_server``."""
    engines: list[Engine] = []

    def make(dns: Any = None, **sections: dict[str, object]) -> Engine:
        sections.setdefault("analysis", {})
        sections["analysis"] = {"retries": 0, **sections["analysis"]}
        engine = build_engine(config_factory(dns=dns or dns_server, **sections))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[..., Any]]:
    """A factory of started hostile servers (closed at teardown)."""
    servers: list[HostileServer] = []

    async def start(behaviour: Behaviour, ssl_context: ssl.SSLContext | None = None
                    ) -> HostileServer:
        server = HostileServer(behaviour, ssl_context)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def still_works(dns_server: DnsServer, website: WebSite) -> Callable[..., Any]:
    """Assert that a Engine that met a hostile server still measures a normal site."""
    dns_server.zone["site.test"] = ["127.0.0.1"]

    async def check(engine: Engine, *, https: bool = False) -> None:
        url = (f"https://site.test:{website.https_port}/" if https
               else f"http://site.test:{website.http_port}/")
        record = await engine.measure(parse_target(url))
        request = record["test_keys"]["requests"][0]
        assert request["failure"] is None
        assert request["response"]["code"] == 200

    return check
