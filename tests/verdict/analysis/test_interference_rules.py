"""Single interference rules: self-proving evidence, site-own failures, lab addresses."""

from __future__ import annotations

import ipaddress

import pytest

from kzprobe.config import AnalysisConfig
from kzprobe.verdict.analysis.fingerprints import FingerprintSet, Signature, build_fingerprints
from kzprobe.verdict.analysis.interference import AnalysisParams, InterferenceResult, interference
from kzprobe.verdict.analysis.webconnectivity import analyze

from .builders import Record, control_page
from .scenarios import PAGE, REAL, REAL2, URL, H, full_control, https_flow

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
FSET = build_fingerprints([
    Signature("bp", "test", "isp", "body", "contains", "Доступ ограничен"),
    Signature("lo", "test", "isp", "dns", "full", "127.0.0.1"),
])


def run(rec: Record, params: AnalysisParams | None = None,
        fset: FingerprintSet = FSET) -> InterferenceResult:
    oo = analyze(rec.keys, url=rec.url, not_bogon=(params or AnalysisParams()).not_bogon)
    return interference(rec.keys, oo=oo, fingerprints=fset, config=params or AnalysisParams(),
                        url=rec.url)


def test_params_from_config() -> None:
    """AnalysisParams takes thresholds and not_bogon from [analysis] and the probe's country."""
    config = AnalysisConfig(not_bogon=(LAB_NET,), throttle_min_seconds=1.5, throttle_factor=3.0)
    params = AnalysisParams.from_config(config, probe_cc="KZ")
    assert params == AnalysisParams(1.5, 3.0, (LAB_NET,), "KZ")


def test_bogon_contradicted_by_second_resolver_without_control() -> None:
    """With no control, a bogon answer contradicted by another resolver is still dns.bogon."""
    rec = Record(URL).dns(H, ("127.0.0.2",))
    rec.dns(H, (REAL,), classic=False, resolver="127.0.0.1:5354").control_failed()
    assert run(rec).codes == ("dns.bogon",)


def test_bogon_everywhere_is_a_misconfiguration() -> None:
    """A name that resolves to private space for the control too gets no code (polito.it)."""
    rec = Record(URL).dns(H, ("192.168.59.6",))
    rec.control(addrs=("192.168.59.6",), http=control_page())
    assert run(rec).codes == ()
    lone = Record(URL).dns(H, ("192.168.59.6",)).control_failed()
    assert run(lone).codes == ()


def test_lab_addresses_need_not_bogon() -> None:
    """In a 198.18/15 lab, a loopback lie is dns.bogon only once the lab range is not_bogon."""
    site = "198.18.0.10"
    rec = Record(URL).dns(H, ("127.0.0.5",))
    rec.control(addrs=(site,), tcp={f"{site}:443": True}, tls={f"{site}:443": True}, sni=H,
                http=control_page())
    assert run(rec).codes == ("dns.inconsistent",)
    lab = AnalysisParams(not_bogon=(LAB_NET,))
    assert run(rec, lab).codes == ("dns.bogon",)


def test_loopback_fingerprint_is_not_a_dns_blockpage() -> None:
    """A 127.0.0.1 answer is dns.bogon, not a blockpage address, even if a list names it."""
    rec = full_control(Record(URL).dns(H, ("127.0.0.1",)))
    result = run(rec)
    assert result.codes == ("dns.bogon",) and result.blockpage is None


def test_site_own_tls_hop_is_not_fingerprinted() -> None:
    """A page fetched over validated TLS from the input host is the site's own words."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body="<p>Доступ ограничен</p>")
    assert run(full_control(rec)).codes == ()
    plain = Record(f"http://{H}/").dns(H, (REAL,))
    txid = plain.tcp(REAL, 80)
    plain.http(txid, f"http://{H}/", REAL, 80, body="<p>Доступ ограничен</p>")
    result = run(full_control(plain, port=80))
    assert result.codes == ("http.blockpage",) and result.blockpage == "bp"


def test_blockpage_is_self_proving() -> None:
    """Without a control, a matched blockpage still yields http.blockpage."""
    rec = Record(f"http://{H}/").dns(H, (REAL,))
    txid = rec.tcp(REAL, 80)
    rec.http(txid, f"http://{H}/", REAL, 80, body="<p>Доступ ограничен</p>")
    assert run(rec.control_failed()).codes == ("http.blockpage",)


def test_no_control_means_no_failure_codes() -> None:
    """Without a control or SNI check, failures at every step give no code."""
    rec = Record(URL).dns(H, failure="dns_nxdomain_error").control_failed()
    assert run(rec).codes == ()
    rec = Record(URL).dns(H, (REAL,))
    rec.tcp(REAL, 443, failure="connection_refused")
    assert run(rec.control_failed()).codes == ()


def test_request_failure_after_failed_connect_is_not_http_code() -> None:
    """A request entry that only repeats a connect failure is not an http.* code."""
    rec = Record(URL).dns(H, (REAL,))
    txid = rec.tcp(REAL, 443, failure="connection_reset")
    rec.http(txid, URL, REAL, 443, failure="connection_reset")
    assert run(full_control(rec)).codes == ("tcp.reset",)


def test_body_throughput_throttling() -> None:
    """A body read far slower per 64 KiB than the benign handshake is throttling."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body=PAGE, body_seconds=9.0)
    rec.sni_check(REAL, 443, t0=10.0, t=10.2)
    assert run(full_control(rec)).codes == ("throttling",)
    rec.keys["requests"][0]["x_body_seconds"] = 0.5
    assert run(full_control(rec)).codes == ()


@pytest.mark.parametrize(("check_failure", "confirmed"), [
    (None, True), ("ssl_invalid_hostname", True), ("connection_reset", False)])
def test_sni_check_reaching_the_server(check_failure: str | None, confirmed: bool) -> None:
    """A benign handshake that got the server's certificate counts as reaching it."""
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="connection_reset")
    rec.sni_check(REAL, 443, failure=check_failure).control_failed()
    result = run(rec)
    assert result.sni_blocking_confirmed is confirmed
    assert result.codes == (("tls.reset",) if confirmed else ())


def test_control_tls_failure_overrides_sni_check() -> None:
    """If the control's handshake with the same SNI also failed, the site is at fault."""
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="connection_reset")
    rec.sni_check(REAL, 443)
    rec.control(addrs=(REAL,), tcp={f"{REAL}:443": True}, tls={f"{REAL}:443": False}, sni=H)
    assert run(rec).codes == ()


def test_analyze_honours_not_bogon() -> None:
    """OONI's bogon flag (x_dns_flags 1) is not raised for not_bogon networks."""
    site = "198.18.0.10"
    rec = Record(URL).dns(H, (site,))
    txid = https_flow(rec, site)
    rec.http(txid, URL, site, 443, body=PAGE)
    assert analyze(rec.keys, url=URL).x_dns_flags == 1
    assert analyze(rec.keys, url=URL, not_bogon=(LAB_NET,)).x_dns_flags == 0


def test_empty_aaaa_of_a_resolved_redirect_host_is_no_failure() -> None:
    """A v4-only redirect hop whose AAAA query is empty gets no dns.no_answer."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, code=302, body="")
    hop = "https://www.example.org/"
    rec.dns("www.example.org", ("198.51.100.7",), depth=1, query_type="A")
    rec.dns("www.example.org", failure="dns_no_answer", depth=1, query_type="AAAA")
    txid = https_flow(rec, "198.51.100.7", sni="www.example.org", depth=1, url=hop)
    rec.http(txid, hop, "198.51.100.7", 443, body=PAGE, depth=1)
    result = run(full_control(rec))
    assert "dns.no_answer" not in result.codes
    assert result.codes == ()


def test_reset_for_any_sni_is_tcp_reset() -> None:
    """Target and benign SNI both reset while the control's handshake works: tcp.reset."""
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="connection_reset")
    rec.sni_check(REAL, 443, failure="connection_reset")
    result = run(full_control(rec))
    assert result.codes == ("tcp.reset",)
    assert result.sni_blocking_confirmed is False


def test_reset_for_target_sni_only_is_tls_reset() -> None:
    """Only the target SNI is reset (the benign one completes): tls.reset, SNI confirmed."""
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="connection_reset")
    rec.sni_check(REAL, 443)
    result = run(full_control(rec))
    assert result.codes == ("tls.reset",)
    assert result.sni_blocking_confirmed is True


def test_other_addresses_serving_the_real_page_are_not_interference() -> None:
    """DNS differs from the control but the page fetched there matches it (CDN, GeoDNS,
    honest proxy): OONI says accessible, kzprobe lists no dns.inconsistent."""
    plain = "http://" + H + "/"
    rec = Record(plain).dns(H, (REAL2,))  # not the control's REAL
    txid = rec.tcp(REAL2, 80)
    rec.http(txid, plain, REAL2, 80, body=PAGE)
    result = run(full_control(rec, port=80))
    assert result.blocking is False
    assert result.codes == ()
