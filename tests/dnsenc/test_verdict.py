"""A failing encrypted resolver is news about that resolver, not a DNS block of the site
(ooni/probe#2274): the same failure from a plain resolver is judged, from DoT/DoH not."""

from __future__ import annotations

from typing import Any

import pytest

from kzprobe.config import parse_config
from kzprobe.verdict.analyzer import Analyzer


def _record(engine: str, failure: str) -> dict[str, Any]:
    ok = {"hostname": "news.test", "query_type": "A", "engine": "udp",
          "resolver_address": "198.18.1.1:53", "failure": None, "t0": 0, "t": 0.01,
          "answers": [{"answer_type": "A", "ipv4": "203.0.113.10"}],
          "tags": ["depth=0", "classic"]}
    other = {**ok, "engine": engine, "resolver_address": "198.18.1.2:853", "failure": failure,
             "answers": [], "tags": ["depth=0"]}
    return {
        "queries": [ok, other],
        "tcp_connect": [], "tls_handshakes": [], "requests": [],
        "control": {"dns": {"failure": None, "addrs": ["203.0.113.10"]}, "tcp_connect": {},
                    "http_request": {"status_code": 200, "body_length": 100, "failure": None,
                                     "title": "", "headers": {}}},
        "control_failure": None,
    }


@pytest.mark.parametrize("failure", ["generic_timeout_error", "dns_nxdomain_error"])
def test_encrypted_resolver_failure_is_not_the_sites(failure: str) -> None:
    analyzer = Analyzer(parse_config({}).config)
    plain, dot, doh = _record("udp", failure), _record("dot", failure), _record("doh", failure)
    for keys in (plain, dot, doh):
        analyzer.apply(keys, "https://news.test/")
    assert any(code.startswith("dns.") for code in plain["interference"]), plain["interference"]
    for keys in (dot, doh):
        assert not any(c.startswith("dns.") for c in keys["interference"]), keys["interference"]
        assert keys["blocking"] != "dns"
