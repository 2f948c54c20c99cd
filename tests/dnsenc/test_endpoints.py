"""``dot://`` and ``doh://`` endpoints against unbound; an SNI reset (the simnet filter in
front of unbound) is a self-proving ``tls.reset``; records load as OONI ``dnscheck``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from oonidata.dataclient import load_measurement

from kzprobe.config import parse_resolver
from kzprobe.engine import build_engine
from kzprobe.targets import parse_target
from tests.dnsenc import servers
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import Measure, endpoint_config
from tests.endpoints.conftest import measure as measure  # the fixture, shared
from tests.servers import WebSite

SNI = f"sni={servers.NAME}"


async def test_dot_endpoint_reachable(measure: Measure, unbound: servers.Unbound) -> None:
    record = await measure(f"dot://127.0.0.1:{unbound.dot_port}?{SNI}&name=site.test")
    keys = record["test_keys"]
    assert keys["reachable"] is True and keys["interference"] == [], keys
    assert keys["x_dot"][0]["addresses"] == ["192.0.2.10"]
    query = keys["queries"][0]
    assert (query["engine"], query["resolver_address"]) == ("dot", f"127.0.0.1:{unbound.dot_port}")
    assert keys["tls_handshakes"][0]["negotiated_protocol"] in ("", "dot")
    assert list(keys["lookups"]) == [f"127.0.0.1:{unbound.dot_port}"]
    parsed = load_measurement(msmt=record)  # OONI's dnscheck model reads it
    assert parsed.test_keys.lookups[f"127.0.0.1:{unbound.dot_port}"].queries


async def test_doh_endpoint_reachable_over_h2(measure: Measure,
                                              unbound: servers.Unbound) -> None:
    record = await measure(f"doh://127.0.0.1:{unbound.doh_port}/dns-query?{SNI}&name=other.test")
    keys = record["test_keys"]
    assert keys["reachable"] is True, keys
    assert keys["tls_handshakes"][0]["negotiated_protocol"] == "h2"
    assert keys["x_doh"][0]["addresses"] == ["192.0.2.11"]
    assert keys["queries"][0]["resolver_address"] == (
        f"https://{servers.NAME}:{unbound.doh_port}/dns-query")
    load_measurement(msmt=record)


async def test_wrong_path_and_missing_name_fail_the_query(measure: Measure,
                                                          unbound: servers.Unbound) -> None:
    nx = (await measure(f"dot://127.0.0.1:{unbound.dot_port}?{SNI}&name=missing.test"))[
        "test_keys"]
    assert (nx["reachable"], nx["failure"], nx["failed_operation"]) == (
        False, "dns_nxdomain_error", "dot_query")
    bad = (await measure(f"doh://127.0.0.1:{unbound.doh_port}/nope?{SNI}&name=site.test"))[
        "test_keys"]
    assert (bad["failure"], bad["failed_operation"]) == ("dns_server_misbehaving", "doh_query")


async def test_doh_sni_reset_is_self_proving_tls_reset(measure: Measure,
                                                       unbound: servers.Unbound) -> None:
    """RST for the DoH server's name, the benign SNI passes: tls.reset, no control needed."""
    async with tcp_filter(unbound.doh_port, rules={servers.NAME: "reset"}) as box:
        keys = (await measure(f"doh://127.0.0.1:{box.address[1]}/dns-query?{SNI}"
                              "&name=site.test"))["test_keys"]
    assert (keys["failure"], keys["failed_operation"]) == ("connection_reset", "tls_handshake")
    assert keys["x_sni_checks"][0]["server_name"] == "benign.test"
    assert keys["interference"] == ["tls.reset"]


async def test_resolving_through_dot(ca_file: Path, unbound: servers.Unbound,
                                     website: WebSite) -> None:
    """A DoT resolver in [dns] resolvers: the host is resolved through it, recorded as
    engine ``dot``, and the endpoint measured at the address it gave."""
    config = endpoint_config(ca_file)
    dot = parse_resolver(f"tls://127.0.0.1:{unbound.dot_port}?{SNI}")
    config = replace(config, dns=replace(config.dns, resolvers=(dot,)))
    engine = build_engine(config)
    try:
        record = await engine.measure(parse_target(f"tcp://loop.test:{website.http_port}"))
    finally:
        await engine.aclose()
    keys = record["test_keys"]
    assert keys["reachable"] is True, keys
    assert {q["engine"] for q in keys["queries"]} == {"dot"}
    assert keys["queries"][0]["answers"][0]["ipv4"] == "127.0.0.1"
