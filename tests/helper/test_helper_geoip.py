"""ASNs end to end on loopback: a helper with a database fills ``ip_info`` asn, and a probe
without ``[probe] asn`` detects its network from the address the helper reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from kzprobe.config import Config
from kzprobe.engine import build_engine
from kzprobe.helper import start_helper
from kzprobe.targets import parse_target
from tests.geoipdb import write_asn_db
from tests.servers import DnsServer, WebSite

ANY_PORT = frozenset(range(1, 65536))
# The probe (and the helper sees it) at 127.0.0.1; the site at 127.0.0.2.
PLAN = {"127.0.0.1/32": (64501, "Loopback ISP"), "127.0.0.2/32": (64500, "Loopback Hosting")}


async def test_probe_without_asn_gets_the_database_asn_of_the_reported_address(
        config_factory: Callable[..., Config], dns_server: DnsServer, website: WebSite,
        tmp_path: Path) -> None:
    db = write_asn_db(tmp_path / "asn.mmdb", PLAN)
    dns_server.zone["site.test"] = ["127.0.0.2"]
    helper_config = config_factory(dns=dns_server, geoip={"asn_db": str(db)},
                                   helper={"allow_nets": ["127.0.0.0/8"]})
    runner, helper_url = await start_helper(replace(helper_config, helper=replace(
        helper_config.helper, listen="127.0.0.1:0", allowed_ports=ANY_PORT)))
    engine = build_engine(config_factory(dns=dns_server, geoip={"asn_db": str(db)},
                                         control={"helper_url": [helper_url]}))
    try:
        record = await engine.measure(parse_target(f"https://site.test:{website.https_port}/"))
    finally:
        await engine.aclose()
        await runner.cleanup()
    keys = record["test_keys"]
    assert keys["control_failure"] is None
    assert (record["probe_asn"], record["probe_network_name"]) == ("AS64501", "Loopback ISP")
    assert record["probe_cc"] == "ZZ"  # no country database: as configured (the default)
    assert (record["resolver_asn"], record["resolver_network_name"]) == \
        ("AS64501", "Loopback ISP")  # the test resolver listens on 127.0.0.1
    answer = keys["queries"][0]["answers"][0]
    assert (answer["ipv4"], answer["asn"], answer["as_org_name"]) == \
        ("127.0.0.2", 64500, "Loopback Hosting")
    assert keys["control"]["ip_info"]["127.0.0.2"]["asn"] == 64500
    assert (keys["dns_consistency"], keys["x_dns_consistency_rule"]) == ("consistent", "ip")
    assert "x_probe_detected" not in record


async def test_without_a_database_nothing_is_detected(
        config_factory: Callable[..., Config], dns_server: DnsServer,
        website: WebSite) -> None:
    dns_server.zone["site.test"] = ["127.0.0.1"]
    helper_config = config_factory(dns=dns_server, helper={"allow_nets": ["127.0.0.0/8"]})
    runner, helper_url = await start_helper(replace(helper_config, helper=replace(
        helper_config.helper, listen="127.0.0.1:0", allowed_ports=ANY_PORT)))
    engine = build_engine(config_factory(dns=dns_server, control={"helper_url": [helper_url]}))
    try:
        record = await engine.measure(parse_target(f"https://site.test:{website.https_port}/"))
    finally:
        await engine.aclose()
        await runner.cleanup()
    assert record["probe_asn"] == "AS0" and record["resolver_asn"] == "AS0"
    assert record["test_keys"]["queries"][0]["answers"][0]["asn"] == 0
    assert record["test_keys"]["control"]["ip_info"]["127.0.0.1"]["asn"] == 0
