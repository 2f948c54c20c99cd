"""Fixtures for HTTP/3 tests: the aioquic server, the probe with a DNS zone, and a helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from kzprobe.engine import Engine, build_engine
from kzprobe.helper import HelperServer
from kzprobe.targets import parse_target
from tests.conftest import make_config
from tests.endpoints.censor import OUTSIDE
from tests.endpoints.conftest import endpoint_config
from tests.http3.h3server import H3Server
from tests.servers import DnsServer

MeasureWeb = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def h3(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[H3Server]:
    server = H3Server(ca=ca, tmp=tmp_path, names=("site.test",))
    await server.start()
    yield server
    server.close()


@pytest.fixture
async def measure_web(ca_file: Path, dns_server: DnsServer) -> AsyncIterator[MeasureWeb]:
    """Measure a URL with the real engine (verdict included); site.test is 127.0.0.1."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    engines: list[Engine] = []

    async def run(url: str, *, helper: str | None = None, **sections: Any) -> dict[str, Any]:
        sections.setdefault("timeouts", {}).setdefault("http", 3.0)
        engine = build_engine(endpoint_config(ca_file, helper, dns_server, **sections))
        engines.append(engine)
        return await engine.measure(parse_target(url))

    yield run
    for engine in engines:
        await engine.aclose()


@pytest.fixture
async def helper(ca_file: Path, dns_server: DnsServer) -> AsyncIterator[str]:
    """A kzprobe helper resolving with the test zone, dialling from 127.0.0.2 (the
    loopback censors' exempt "outside")."""
    config = make_config(ca_file=ca_file, dns=dns_server,
                         helper={"allow_nets": ["127.0.0.0/8"], "bind_address": OUTSIDE,
                                 "allowed_ports": ["1-65535"]},
                         timeouts={"connect": 2.0, "tls": 2.0, "http": 3.0},
                         analysis={"not_bogon": ["127.0.0.0/8"], "retries": 0})
    runner = web.AppRunner(HelperServer(config).app(), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()
