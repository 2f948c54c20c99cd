"""Shared fixtures: a test CA, real loopback servers, and a config that points at them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from kzprobe.config import Config, LoadedConfig, parse_config
from kzprobe.engine import Engine, build_engine
from kzprobe.helper import HelperServer
from kzprobe.targets import parse_target
from tests.http3.h3server import H3Server
from tests.servers import DnsServer, RawServer, WebSite

IN_CI = os.environ.get("CI") == "true"

Measure = Callable[..., Awaitable[dict[str, Any]]]


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
async def h3(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[H3Server]:
    """An HTTP/3 (aioquic) server for site.test on 127.0.0.1."""
    server = H3Server(ca=ca, tmp=tmp_path, names=("site.test",))
    await server.start()
    yield server
    server.close()


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


@contextlib.asynccontextmanager
async def measurer(configure: Callable[..., Config]) -> AsyncIterator[Measure]:
    """``run(uri, **kwargs)`` measures one target with the real engine (``Engine.measure``:
    verdict included), built from ``configure(**kwargs)``; every engine is closed at the end."""
    engines: list[Engine] = []

    async def run(uri: str, **kwargs: Any) -> dict[str, Any]:
        engine = build_engine(configure(**kwargs))
        engines.append(engine)
        return await engine.measure(parse_target(uri))

    try:
        yield run
    finally:
        for engine in engines:
            await engine.aclose()


@contextlib.asynccontextmanager
async def serving_helper(config: Config) -> AsyncIterator[str]:
    """A kzprobe control helper on 127.0.0.1 (an ephemeral port); yields its URL."""
    runner = web.AppRunner(HelperServer(config).app(), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
