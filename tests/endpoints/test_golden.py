"""Golden endpoint records: a summary of each record of a few endpoint targets measured
against real loopback servers, compared with tests/golden/endpoints_summary.json (as
tests/test_demo.py does for the demo's web targets). A change of the measurement flow that
alters endpoint records shows here. Ports are random, so targets are keyed by name.

Regenerate (only for an intended change of records): ``KZPROBE_GOLDEN_WRITE=1 pytest ...``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from kzprobe.engine import build_engine
from kzprobe.targets import parse_target
from tests.conftest import make_config
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import Measure, endpoint_config
from tests.endpoints.daemons import TorRelay
from tests.servers import DnsServer, WebSite, refused_port

GOLDEN = Path(__file__).parent.parent / "golden" / "endpoints_summary.json"


def _shake(h: dict[str, Any]) -> list[Any]:
    """A handshake's name (tor's random ``www.<letters>.com`` as a pattern), failure,
    verification, transaction id and tags."""
    name = re.sub(r"^www\.[a-z0-9]+\.com$", "www.<random>.com", h["server_name"])
    return [name, h["failure"], h["no_tls_verify"], h.get("transaction_id"), h.get("tags")]


def _control(keys: dict[str, Any]) -> dict[str, Any] | None:
    control = keys.get("control")
    if not isinstance(control, dict):
        return None
    return {"tcp_connect": sorted((v["status"], v["failure"])
                                  for v in control["tcp_connect"].values()),
            "tls_handshake": sorted((v["status"], v["failure"])
                                    for v in control["tls_handshake"].values()),
            "dns": control["dns"]["failure"],
            "x_endpoint": control.get("x_endpoint")}


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of an endpoint record the flow decides (no ports, times or addresses)."""
    keys = record["test_keys"]
    queries = Counter(f"{q['engine']}:{q['query_type']}" for q in keys["queries"])
    return {
        "test_name": record["test_name"],
        "reachable": keys["reachable"],
        "failure": keys["failure"],
        "failed_operation": keys["failed_operation"],
        "interference": keys["interference"],
        "tcp_connect": [[c["status"]["failure"], c.get("transaction_id"), c.get("tags")]
                        for c in keys["tcp_connect"]],
        "tls_handshakes": [_shake(h) for h in keys["tls_handshakes"]],
        "x_sni_checks": [_shake(h) for h in keys["x_sni_checks"]],
        "x_endpoint_results": [(r["failure"], r["failed_operation"])
                               for r in keys["x_endpoint_results"]],
        "queries": dict(sorted(queries.items())),
        "control": _control(keys),
    }


async def _measure_named(ca_file: Path, uri: str, dns: DnsServer) -> dict[str, Any]:
    """``uri`` with a name that the loopback DNS server resolves (A, plus AAAA asked)."""
    config = endpoint_config(ca_file)
    resolver = make_config(dns=dns).dns.resolvers[0]
    config = replace(config, dns=replace(config.dns, resolvers=(resolver,), query_aaaa=True))
    engine = build_engine(config)
    try:
        return await engine.measure(parse_target(uri))
    finally:
        await engine.aclose()


async def test_endpoint_records_match_the_golden_summary(
        measure: Measure, website: WebSite, helper_url: str, tor_relay: TorRelay,
        ca_file: Path) -> None:
    """tcp (open, refused with a control, by name), tls (ok, unverified, SNI reset with a
    control, reset on every name) and tor (ok, SNI reset) records keep their shape."""
    got: dict[str, Any] = {}
    got["tcp_open"] = await measure(f"tcp://127.0.0.1:{website.http_port}")
    got["tcp_refused_control"] = await measure(f"tcp://127.0.0.1:{refused_port()}",
                                               helper_url=helper_url)
    dns = DnsServer()
    await dns.start()
    dns.zone["site.test"] = ["127.0.0.1"]
    try:
        got["tcp_by_name"] = await _measure_named(
            ca_file, f"tcp://site.test:{website.http_port}", dns)
        got["tls_by_name"] = await _measure_named(
            ca_file, f"tls://site.test:{website.https_port}", dns)
    finally:
        dns.close()
    got["tls_ok"] = await measure(f"tls://127.0.0.1:{website.https_port}?sni=site.test")
    got["tls_unverified"] = await measure(
        f"tls://127.0.0.1:{website.https_port}?sni=other.test&verify=0")
    async with tcp_filter(website.https_port, rules={"site.test": "reset"}) as box:
        got["tls_sni_reset_control"] = await measure(
            f"tls://127.0.0.1:{box.address[1]}?sni=site.test", helper_url=helper_url)
    async with tcp_filter(website.https_port, default="reset") as box:
        got["tls_reset_every_name"] = await measure(
            f"tls://127.0.0.1:{box.address[1]}?sni=site.test")
    got["tor_ok"] = await measure(f"tor://127.0.0.1:{tor_relay.port}")
    async with tcp_filter(tor_relay.port, rules={"*.com": "reset"}) as box:
        got["tor_sni_reset_control"] = await measure(f"tor://127.0.0.1:{box.address[1]}",
                                                     helper_url=helper_url)
    summaries = orjson.loads(orjson.dumps({name: summary(r) for name, r in got.items()}))
    if os.environ.get("KZPROBE_GOLDEN_WRITE"):
        GOLDEN.write_bytes(orjson.dumps(summaries, option=orjson.OPT_INDENT_2) + b"\n")
    assert summaries == orjson.loads(GOLDEN.read_bytes())
