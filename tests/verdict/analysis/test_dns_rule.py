"""DNS consistency with ASNs known (OONI's IP-or-ASN rule) and without (the TLS stand-in).

Records are built the way the probe writes them; ASNs arrive as the probe's database puts
them on answers (``asn``) and as the helper's puts them in ``ip_info``.
"""

from __future__ import annotations

from typing import Any

from kzprobe.verdict.analysis.fingerprints import load_fingerprints
from kzprobe.verdict.analysis.interference import AnalysisParams, interference
from kzprobe.verdict.analysis.webanalysis import AddressFacts, lookup_verdict
from kzprobe.verdict.analysis.webconnectivity import analyze

from .builders import Record, control_page

H = "cdn.example"
URL, HTTP_URL = f"https://{H}/", f"http://{H}/"
PROBE_IP, CONTROL_IP, PROXY_IP = "203.0.113.10", "203.0.113.20", "192.0.2.80"
SITE_AS, ISP_AS = 64500, 64501
PAGE = "<title>CDN hosted page</title>" + "x" * 975


def _asns(rec: Record, asn: dict[str, int]) -> Record:
    """Put ``asn`` on every answer (probe database) and into ip_info (helper database)."""
    for query in rec.keys["queries"]:
        for answer in query["answers"]:
            answer["asn"] = asn.get(answer.get("ipv4") or answer.get("ipv6"), 0)
    rec.keys["control"]["ip_info"] = {ip: {"asn": n, "flags": 2} for ip, n in asn.items()}
    return rec


def _http_site(answer: str) -> Record:
    """Plain HTTP: the probe got ``answer``, the control CONTROL_IP; the same page at both."""
    rec = Record(HTTP_URL).dns(H, (answer,))
    txid = rec.tcp(answer, 80)
    rec.http(txid, HTTP_URL, answer, 80, body=PAGE)
    return rec.control(addrs=(CONTROL_IP,), tcp={f"{CONTROL_IP}:80": True},
                       http=control_page(length=len(PAGE), title="CDN hosted page"))


def _https_site(answer: str, *, tls_failure: str | None = None) -> Record:
    rec = Record(URL).dns(H, (answer,))
    txid = rec.tcp(answer, 443)
    rec.tls(txid, answer, 443, H, failure=tls_failure)
    if tls_failure is None:
        rec.http(txid, URL, answer, 443, body=PAGE)
    eps = {f"{CONTROL_IP}:443": True}
    return rec.control(addrs=(CONTROL_IP,), tcp=eps, tls=eps, sni=H,
                       http=control_page(length=len(PAGE), title="CDN hosted page"))


def _keys(rec: Record, url: str) -> dict[str, Any]:
    return analyze(rec.keys, url=url).as_dict()


def test_cdn_over_http_is_consistent_by_asn() -> None:
    """Different addresses of one AS, plain HTTP: OONI says consistent; so do we, by ASN."""
    got = _keys(_asns(_http_site(PROBE_IP), {PROBE_IP: SITE_AS, CONTROL_IP: SITE_AS}), HTTP_URL)
    assert (got["dns_consistency"], got["x_dns_consistency_rule"]) == ("consistent", "asn")
    assert (got["blocking"], got["accessible"]) == (False, True)


def test_cdn_over_http_without_asns_falls_back_to_the_stand_in() -> None:
    """The same record without ASNs: no TLS can vouch for the address, so inconsistent."""
    got = _keys(_http_site(PROBE_IP), HTTP_URL)
    assert (got["dns_consistency"], got["x_dns_consistency_rule"]) == ("inconsistent", "tls")


def test_proxy_in_another_as_passing_tls_is_inconsistent_but_accessible() -> None:
    """A transparent proxy in the ISP's AS that passes TLS through: OONI's inconsistent,
    false/true; the stand-in (no ASNs) would call the TLS-validated address consistent."""
    asn = {PROXY_IP: ISP_AS, CONTROL_IP: SITE_AS}
    got = _keys(_asns(_https_site(PROXY_IP), asn), URL)
    assert (got["dns_consistency"], got["x_dns_consistency_rule"]) == ("inconsistent", "asn")
    assert (got["blocking"], got["accessible"]) == (False, True)
    plain = _keys(_https_site(PROXY_IP), URL)
    assert (plain["dns_consistency"], plain["x_dns_consistency_rule"]) == ("consistent", "tls")


def test_proxy_in_another_as_with_an_sni_reset_is_dns_blocking() -> None:
    """The same proxy plus an RST on the SNI: OONI says "dns", and the codes list both."""
    rec = _asns(_https_site(PROXY_IP, tls_failure="connection_reset"),
                {PROXY_IP: ISP_AS, CONTROL_IP: SITE_AS})
    rec.sni_check(PROXY_IP, 443)
    oo = analyze(rec.keys, url=URL)
    assert (oo.blocking, oo.accessible, oo.x_dns_consistency_rule) == ("dns", False, "asn")
    result = interference(rec.keys, oo=oo, fingerprints=load_fingerprints(),
                          config=AnalysisParams(), url=URL)
    assert set(result.codes) == {"dns.inconsistent", "tls.reset"}


def test_common_address_decides_by_ip_and_no_comparison_by_failure() -> None:
    same = _keys(_asns(_http_site(CONTROL_IP), {CONTROL_IP: SITE_AS}), HTTP_URL)
    assert (same["dns_consistency"], same["x_dns_consistency_rule"]) == ("consistent", "ip")
    rec = Record(URL).dns(H, failure="dns_nxdomain_error")
    rec.control(addrs=(CONTROL_IP,), http=control_page(length=len(PAGE)))
    failed = _keys(rec, URL)
    assert (failed["dns_consistency"], failed["x_dns_consistency_rule"]) == \
        ("inconsistent", "failure")
    assert _keys(Record(URL).dns(H, (CONTROL_IP,)).control_failed(), URL)[
        "x_dns_consistency_rule"] is None


def test_asn_rule_needs_asns_on_both_sides() -> None:
    """A probe database without a helper one (or the reverse) leaves the stand-in deciding."""
    facts = AddressFacts(asn={PROBE_IP: SITE_AS}, validated=frozenset({PROBE_IP}))
    assert lookup_verdict(frozenset({PROBE_IP}), frozenset({CONTROL_IP}), facts) == (True, "tls")
    both = AddressFacts(asn={PROBE_IP: SITE_AS, CONTROL_IP: ISP_AS},
                        validated=frozenset({PROBE_IP}))
    assert lookup_verdict(frozenset({PROBE_IP}), frozenset({CONTROL_IP}), both) == (False, "asn")
