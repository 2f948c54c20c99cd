"""Fixtures for endpoint tests: real daemons (module-scoped), the probe, and a control helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kzprobe.config import Config
from tests.conftest import Measure, make_config, measurer, serving_helper
from tests.endpoints import daemons
from tests.endpoints.censor import OUTSIDE
from tests.servers import DnsServer, RawServer


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


def helper_config(ca_file: Path, dns: DnsServer | None = None, **timeouts: float) -> Config:
    """A control helper's config: dialling from 127.0.0.2 (the censors' exempt "outside"),
    any loopback port allowed (local daemons listen on ephemeral ports)."""
    return make_config(ca_file=ca_file, dns=dns,
                       helper={"allow_nets": ["127.0.0.0/8"], "bind_address": OUTSIDE,
                               "allowed_ports": ["1-65535"]},
                       timeouts={"connect": 2.0, "tls": 2.0, **timeouts},
                       analysis={"not_bogon": ["127.0.0.0/8"], "retries": 0})


@pytest.fixture
async def measure(ca_file: Path) -> AsyncIterator[Measure]:
    """Measure one target URI with the real engine (``Engine.measure``: verdict included)."""
    def configure(*, helper_url: str | None = None, **sections: Any) -> Config:
        return endpoint_config(ca_file, helper_url, **sections)

    async with measurer(configure) as run:
        yield run


@pytest.fixture
async def helper_url(ca_file: Path) -> AsyncIterator[str]:
    """A kzprobe helper dialling from 127.0.0.2 (the censors' exempt "outside")."""
    async with serving_helper(helper_config(ca_file)) as url:
        yield url


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
