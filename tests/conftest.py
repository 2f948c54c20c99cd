"""Shared fixtures: a test CA, real loopback servers, and a config that points at them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trustme

from kzprobe.config import Config, LoadedConfig, parse_config
from tests.servers import DnsServer, RawServer, WebSite

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    await server.start()
    yield server
    server.close()


@pytest.fixture
async def website(ca: trustme.CA) -> AsyncIterator[WebSite]:
    site = WebSite(ca=ca, names=("site.test", "other.test", "xn--e1afmkfd.test"))
    await site.start()
    yield site
    await site.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., object]]:
    servers: list[RawServer] = []

    async def start(behaviour: Callable[..., object]) -> RawServer:
        server = RawServer(behaviour)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def make_config(*, ca_file: Path | None = None, dns: DnsServer | None = None,
                tmp: Path | None = None, **sections: dict[str, object]) -> Config:
    """A Config for loopback tests: short timeouts, loopback dialable, test CA trusted."""
    data: dict[str, dict[str, object]] = {
        "timeouts": {"dns": 1.0, "connect": 2.0, "tls": 2.0, "http": 3.0, "measurement": 20.0},
        "analysis": {"not_bogon": ["127.0.0.0/8"]},
        "dns": {"resolvers": [dns.address] if dns else ["system"], "query_aaaa": False},
        "limits": {"rate": 1000, "burst": 1000},
        "output": {"store_bodies": "always"},
    }
    if ca_file is not None:
        data["tls"] = {"ca_file": str(ca_file)}
    if tmp is not None:
        data["output"]["dir"] = str(tmp / "out")
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    loaded: LoadedConfig = parse_config(data)
    return loaded.config


@pytest.fixture
def config_factory(ca_file: Path) -> Iterator[Callable[..., Config]]:
    def factory(**kwargs: object) -> Config:
        kwargs.setdefault("ca_file", ca_file)
        return make_config(**kwargs)  # type: ignore[arg-type]

    yield factory
