"""tcp:// and tls:// endpoints: real loopback servers, SNI filtering, refused ports, DNS names."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from kzprobe.config import Config
from kzprobe.engine import build_engine
from kzprobe.measure.context import Stopwatch
from kzprobe.measure.experiments.endpoint import MAX_ADDRESSES, TcpConnect
from kzprobe.targets import parse_target
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import Measure, endpoint_config
from tests.servers import DnsServer, WebSite, refused_port


async def test_tcp_connect_to_a_listening_port(measure: Measure, website: WebSite) -> None:
    """tcp:// is reachable when the connect succeeds; the connect is recorded (df-005)."""
    record = await measure(f"tcp://127.0.0.1:{website.http_port}")
    keys = record["test_keys"]
    assert record["test_name"] == "tcpconnect"
    assert keys["reachable"] is True and keys["failure"] is None
    assert keys["tcp_connect"][0]["status"]["success"] is True
    assert keys["x_endpoint_results"][0]["address"] == f"127.0.0.1:{website.http_port}"


async def test_refused_port_with_control_is_tcp_refused(measure: Measure,
                                                        helper_url: str) -> None:
    """Refused inside and outside: unreachable, no interference (the port is just closed)."""
    keys = (await measure(f"tcp://127.0.0.1:{refused_port()}", helper_url=helper_url))[
        "test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "connection_refused"
    assert keys["failed_operation"] == "tcp_connect" and keys["interference"] == []


async def test_tls_handshake_records_the_chain(measure: Measure, website: WebSite) -> None:
    """tls:// with sni verifies against the trust store and records the peer chain."""
    record = await measure(f"tls://127.0.0.1:{website.https_port}?sni=site.test")
    keys = record["test_keys"]
    assert record["test_name"] == "tlshandshake" and keys["reachable"] is True
    shake = keys["tls_handshakes"][0]
    assert shake["server_name"] == "site.test" and shake["peer_certificates"]
    assert shake["tls_version"].startswith("TLSv1.")


async def test_untrusted_chain_fails_unless_verify_is_off(
        measure: Measure, tmp_path: Path) -> None:
    """An unknown CA is ssl_unknown_authority; verify=0 records the same chain as reachable."""
    other = trustme.CA()
    site = WebSite(ca=other, names=("site.test",))
    await site.start()
    try:
        strict = (await measure(f"tls://127.0.0.1:{site.https_port}?sni=site.test"))[
            "test_keys"]
        lax = (await measure(f"tls://127.0.0.1:{site.https_port}?sni=site.test&verify=0"))[
            "test_keys"]
    finally:
        await site.close()
    assert strict["failure"] == "ssl_unknown_authority" and strict["interference"] == []
    assert strict["tls_handshakes"][0]["peer_certificates"]
    assert strict["tls_handshakes"][0]["no_tls_verify"] is False
    assert lax["reachable"] is True and lax["tls_handshakes"][0]["no_tls_verify"] is True


async def test_rst_on_sni_is_self_proving_tls_reset(measure: Measure, website: WebSite) -> None:
    """RST for one SNI while the benign SNI reaches the server: tls.reset without a control."""
    async with tcp_filter(website.https_port, rules={"site.test": "reset"}) as box:
        record = await measure(f"tls://127.0.0.1:{box.address[1]}?sni=site.test")
    keys = record["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "connection_reset"
    check = keys["x_sni_checks"][0]
    assert check["server_name"] == "benign.test" and check["failure"] in (
        None, "ssl_invalid_hostname", "ssl_unknown_authority")
    assert keys["interference"] == ["tls.reset"]


async def test_blackholed_sni_with_control_is_tls_timeout(
        measure: Measure, website: WebSite, helper_url: str) -> None:
    """A stalled handshake for one SNI, the helper's handshake fine: tls.timeout."""
    async with tcp_filter(website.https_port, rules={"site.test": "blackhole"}) as box:
        keys = (await measure(f"tls://127.0.0.1:{box.address[1]}?sni=site.test",
                              helper_url=helper_url))["test_keys"]
    assert keys["failure"] == "generic_timeout_error"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["tls.timeout"]


async def test_names_are_resolved_and_addresses_bounded(
        ca_file: Path, dns_server: DnsServer, website: WebSite) -> None:
    """A host name is resolved (df-002 recorded); at most MAX_ADDRESSES addresses are dialled."""
    dns_server.zone["many.test"] = [f"127.0.0.{i}" for i in range(1, 10)]
    config: Config = endpoint_config(ca_file, dns=dns_server)
    engine = build_engine(config)
    try:
        keys = await TcpConnect().measure(parse_target(f"tcp://many.test:{website.http_port}"),
                                          engine.resources.context, Stopwatch())
    finally:
        await engine.aclose()
    assert keys["queries"][0]["hostname"] == "many.test"
    assert len(keys["tcp_connect"]) == MAX_ADDRESSES
    assert keys["reachable"] is True  # 127.0.0.1 answers; the others are refused


async def test_nxdomain_is_a_resolve_failure(measure: Measure, dns_server: DnsServer) -> None:
    """An unresolvable name fails at the resolve step with OONI's DNS failure string."""
    keys = (await measure("tcp://missing.test:443", dns=dns_server))["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "dns_nxdomain_error"
    assert keys["failed_operation"] == "resolve"
    assert keys["dns_experiment_failure"] == "dns_nxdomain_error"


def test_ssl_module_has_tls13() -> None:
    """The handshake tests assume a TLS 1.2+ capable OpenSSL (sanity of the environment)."""
    assert ssl.HAS_TLSv1_3
