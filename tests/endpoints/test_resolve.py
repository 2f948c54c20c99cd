"""One resolve step for every experiment and the helper: every configured resolver is
asked, AAAA only with ``dns.query_aaaa``. Two real DNS servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from kzprobe.config import Config
from kzprobe.engine import build_engine
from kzprobe.helper import start_helper
from kzprobe.targets import parse_target
from tests.conftest import make_config
from tests.endpoints.conftest import endpoint_config
from tests.helper.test_helper import ANY_PORT
from tests.servers import DnsServer, WebSite

# local servers listen on ephemeral ports: the helper's port allow-list is opened explicitly
LOOPBACK_HELPER = {"allow_nets": ["127.0.0.0/8"], "allowed_ports": ["1-65535"]}


def _asked(server: DnsServer) -> list[str]:
    """The query types ``server`` was asked, in order."""
    return [query.qtype for query in server.queries]


@pytest.fixture
async def two_resolvers() -> AsyncIterator[tuple[DnsServer, DnsServer]]:
    """Resolver 1 knows nothing (NXDOMAIN); resolver 2 knows ``only2.test``."""
    first, second = DnsServer(), DnsServer()
    await first.start()
    await second.start()
    second.zone["only2.test"] = ["127.0.0.1", "::1"]
    yield first, second
    first.close()
    second.close()


def _with_resolvers(config: Config, servers: tuple[DnsServer, DnsServer],
                    query_aaaa: bool) -> Config:
    resolvers = tuple(make_config(dns=s).dns.resolvers[0] for s in servers)
    return replace(config, dns=replace(config.dns, resolvers=resolvers, query_aaaa=query_aaaa))


@pytest.mark.parametrize("query_aaaa", [False, True])
async def test_endpoint_asks_every_resolver(ca_file: Path, website: WebSite, query_aaaa: bool,
                                           two_resolvers: tuple[DnsServer, DnsServer]
                                           ) -> None:
    """A name only the second resolver knows is reachable; both resolvers' lookups are
    recorded, AAAA among them only when asked for."""
    engine = build_engine(_with_resolvers(endpoint_config(ca_file), two_resolvers, query_aaaa))
    try:
        record = await engine.measure(parse_target(f"tcp://only2.test:{website.http_port}"))
    finally:
        await engine.aclose()
    keys = record["test_keys"]
    assert keys["reachable"] is True, keys["failure"]
    asked = {(q["resolver_address"], q["query_type"]) for q in keys["queries"]}
    qtypes = {"A", "AAAA"} if query_aaaa else {"A"}
    assert asked == {(s.address, t) for s in two_resolvers for t in qtypes}


async def _th_dns(config: Config, url: str) -> object:
    running, helper = await start_helper(replace(config, helper=replace(
        config.helper, listen="127.0.0.1:0", allowed_ports=ANY_PORT)))
    try:
        async with aiohttp.ClientSession() as session, session.post(
                helper, json={"http_request": url, "tcp_connect": [],
                              "http_request_headers": {}}) as resp:
            assert resp.status == 200
            return (await resp.json())["dns"]
    finally:
        await running.cleanup()


@pytest.mark.parametrize("scheme", ["http", "tcp"])
async def test_helper_resolves_as_the_probe_does(
        ca_file: Path, website: WebSite, scheme: str,
        two_resolvers: tuple[DnsServer, DnsServer]) -> None:
    """The helper asks every resolver too, and no AAAA when query_aaaa is off."""
    config = _with_resolvers(make_config(ca_file=ca_file, helper=LOOPBACK_HELPER),
                             two_resolvers, query_aaaa=False)
    suffix = "/" if scheme == "http" else ""
    dns = await _th_dns(config, f"{scheme}://only2.test:{website.http_port}{suffix}")
    assert "AAAA" not in _asked(two_resolvers[0]) + _asked(two_resolvers[1])
    assert "A" in _asked(two_resolvers[0])
    assert dns == {"failure": None, "addrs": ["127.0.0.1"]}


@pytest.mark.parametrize("scheme", ["http", "tcp"])
async def test_helper_resolves_once(ca_file: Path, website: WebSite, scheme: str,
                                    two_resolvers: tuple[DnsServer, DnsServer]) -> None:
    """The helper's ``dns`` answer and the addresses it measures come from one resolution:
    each resolver is asked once per request."""
    config = _with_resolvers(make_config(ca_file=ca_file, helper=LOOPBACK_HELPER),
                             two_resolvers, query_aaaa=False)
    suffix = "/" if scheme == "http" else ""
    dns = await _th_dns(config, f"{scheme}://only2.test:{website.http_port}{suffix}")
    assert dns == {"failure": None, "addrs": ["127.0.0.1"]}
    assert [_asked(s) for s in two_resolvers] == [["A"], ["A"]]
