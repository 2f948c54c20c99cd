"""OONI-exact DNS consistency with ASNs, and probe self-location, in the namespace lab.

The probe measures through the ISP; its control is the lab helper with the ASN database
(``lab_geoip``), so ``ip_info`` carries ASNs and the probe's own database puts them on its
answers. Each case also runs against the lab's first helper and without a probe database:
the no-ASN path, where kzprobe's TLS stand-in decides (``x_dns_consistency_rule: "tls"``).
Expected verdicts are OONI Web Connectivity LTE's for the same observations.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from .geoip import INTERNET_AS, INTERNET_ORG, ISP_AS, ISP_ORG, LabGeoip
from .lab import Lab
from .records import Record, answers, expect_verdict, keys, tls_failures

pytestmark = pytest.mark.lab


def _measure(lab: Lab, tmp_path: Path, url: str, scenario: str | None,
             *sections: dict[str, Any]) -> list[Record]:
    """One record of ``url`` per config (each section set merged over the lab defaults)."""
    configs = []
    for index, overrides in enumerate(sections):
        directory = tmp_path / f"config{index}"
        directory.mkdir()
        configs.append(lab.write_config(directory, **overrides))
    records = []
    with lab.scenario(scenario) if scenario else contextlib.nullcontext():
        for config in configs:
            found = lab.measure(url, config)
            assert len(found) == 1
            records.append(found[0])
    return records


def _rule(record: Record) -> tuple[Any, Any]:
    return keys(record)["dns_consistency"], keys(record)["x_dns_consistency_rule"]


def _answer_asns(record: Record) -> list[tuple[Any, Any]]:
    return [(a["asn"], a["as_org_name"]) for q in keys(record)["queries"] for a in q["answers"]
            if a.get("answer_type") == "A"]


def test_transparent_proxy_in_another_as_is_inconsistent_but_accessible(
        lab: Lab, lab_geoip: LabGeoip, tmp_path: Path) -> None:
    """The ISP points the name at its proxy, which passes TLS through: OONI's
    ``inconsistent``, false/true, and no interference code (the real page loaded)."""
    with_asn, without = _measure(lab, tmp_path, lab.url("proxied"), "dns_proxy",
                                 lab_geoip.sections(), {})
    assert answers(with_asn) == [lab.proxy_ip] and tls_failures(with_asn) == [None]
    assert _answer_asns(with_asn) == [(ISP_AS, ISP_ORG)]
    ip_info = keys(with_asn)["control"]["ip_info"]
    assert ip_info[lab.site("proxied").ip]["asn"] == INTERNET_AS
    assert _rule(with_asn) == ("inconsistent", "asn")
    expect_verdict(with_asn, blocking=False, accessible=True, interference=[])
    assert _answer_asns(without) == [(0, "")]
    assert _rule(without) == ("consistent", "tls")  # the stand-in: TLS validated the proxy
    expect_verdict(without, blocking=False, accessible=True, interference=[])


def test_transparent_proxy_that_resets_the_sni_is_dns_blocking(
        lab: Lab, lab_geoip: LabGeoip, tmp_path: Path) -> None:
    """The same proxy plus an RST on the site's SNI: OONI says ``"dns"``; the codes name
    both mechanisms."""
    (record,) = _measure(lab, tmp_path, lab.url("proxied"), "dns_proxy_sni_rst",
                         lab_geoip.sections())
    assert answers(record) == [lab.proxy_ip]
    assert tls_failures(record) == ["connection_reset"]
    assert _rule(record) == ("inconsistent", "asn")
    expect_verdict(record, blocking="dns", accessible=False,
                   interference=["dns.inconsistent", "tls.reset"])


def test_cdn_edge_of_the_same_as_over_plain_http_is_consistent(
        lab: Lab, lab_geoip: LabGeoip, tmp_path: Path) -> None:
    """The probe and the control get different addresses of the site's AS, plain HTTP, the
    same page: consistent by ASN, no code. Without ASNs nothing can vouch for the address."""
    with_asn, without = _measure(lab, tmp_path, lab.url("proxied", "http"), "dns_cdn",
                                 lab_geoip.sections(), {})
    assert answers(with_asn) == [lab.site("open").ip]
    assert _answer_asns(with_asn) == [(INTERNET_AS, INTERNET_ORG)]
    assert keys(with_asn)["control"]["dns"]["addrs"] == [lab.site("proxied").ip]
    assert _rule(with_asn) == ("consistent", "asn")
    expect_verdict(with_asn, blocking=False, accessible=True, interference=[])
    assert _rule(without) == ("inconsistent", "tls")
    expect_verdict(without, blocking=False, accessible=True, interference=[])


def test_probe_locates_itself_from_the_address_the_helper_saw(
        lab: Lab, lab_geoip: LabGeoip, tmp_path: Path) -> None:
    """No [probe] section: probe_asn, probe_cc and probe_network_name come from the
    databases for the client's address (as the helper reported it); resolver_asn too."""
    (record,) = _measure(lab, tmp_path, lab.url("open"), None,
                         {**lab_geoip.sections(), "probe": None})
    assert keys(record)["control_failure"] is None
    assert (record["probe_asn"], record["probe_cc"], record["probe_network_name"]) == \
        (f"AS{ISP_AS}", "KZ", ISP_ORG)
    assert (record["resolver_asn"], record["resolver_network_name"]) == (f"AS{ISP_AS}", ISP_ORG)
    assert "x_probe_detected" not in record
    assert _rule(record) == ("consistent", "ip")
