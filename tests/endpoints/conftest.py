"""Fixtures for endpoint tests: real daemons (module-scoped), the probe, and a control helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kzprobe.config import Config
from kzprobe.engine import Engine, build_engine
from kzprobe.helper import HelperServer
from kzprobe.targets import parse_target
from tests.conftest import make_config
from tests.endpoints import daemons
from tests.endpoints.censor import OUTSIDE
from tests.servers import DnsServer, RawServer

Measure = Callable[..., Awaitable[dict[str, Any]]]


def endpoint_config(ca_file: Path | None = None, helper_url: str | None = None,
                    dns: DnsServer | None = None, **sections: dict[str, object]) -> Config:
    """Short timeouts, loopback dialable, no re-measurement unless asked."""
    base: dict[str, dict[str, object]] = {
        "timeouts": {"connect": 2.0, "tls": 2.0, "control": 10.0, "measurement": 20.0},
        "analysis": {"not_bogon": ["127.0.0.0/8"], "retries": 0, "benign_sni": "benign.test"},
    }
    if helper_url:
        base["control"] = {"helper_url": [helper_url]}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return make_config(ca_file=ca_file, dns=dns, **base)


@pytest.fixture
async def measure(ca_file: Path) -> AsyncIterator[Measure]:
    """Measure one target URI with the real engine (``Engine.measure``: verdict included)."""
    engines: list[Engine] = []

    async def run(uri: str, *, helper_url: str | None = None, **sections: Any) -> dict[str, Any]:
        engine = build_engine(endpoint_config(ca_file, helper_url, **sections))
        engines.append(engine)
        return await engine.measure(parse_target(uri))

    yield run
    for engine in engines:
        await engine.aclose()


@pytest.fixture
async def helper_url(ca_file: Path) -> AsyncIterator[str]:
    """A kzprobe helper dialling from 127.0.0.2 (the censors' exempt "outside")."""
    # local daemons listen on ephemeral ports: the port allow-list is opened explicitly
    config = make_config(ca_file=ca_file, helper={"allow_nets": ["127.0.0.0/8"],
                                                  "bind_address": OUTSIDE,
                                                  "allowed_ports": ["1-65535"]},
                         timeouts={"connect": 2.0, "tls": 2.0},
                         analysis={"not_bogon": ["127.0.0.0/8"], "retries": 0})
    runner = web.AppRunner(HelperServer(config).app(), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


@pytest.fixture(scope="module")
def openvpn_udp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with daemons.openvpn_server(tmp_path_factory.mktemp("ovpn-udp"), "udp4") as port:
        yield port


@pytest.fixture(scope="module")
def openvpn_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with daemons.openvpn_server(tmp_path_factory.mktemp("ovpn-tcp"), "tcp4-server") as port:
        yield port


@pytest.fixture(scope="module")
def tor_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[daemons.TorRelay]:
    with daemons.tor_relay(tmp_path_factory.mktemp("tor")) as relay:
        yield relay


@pytest.fixture(scope="module")
def stun_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with daemons.stun_server(tmp_path_factory.mktemp("stun")) as port:
        yield port


@pytest.fixture(scope="module")
def wireguard_server(tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[daemons.WireGuardServer]:
    with daemons.wireguard_server(tmp_path_factory.mktemp("wg")) as server:
        yield server


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer: a control helper that hangs, a TLS peer that stalls."""
    await reader.read(1 << 16)
    await asyncio.sleep(3600)


@pytest.fixture
async def silent() -> AsyncIterator[RawServer]:
    """A loopback server that accepts connections and never answers."""
    server = RawServer(_hold)
    await server.start()
    yield server
    await server.close()
