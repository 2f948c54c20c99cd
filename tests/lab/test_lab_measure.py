"""End to end: ``kzprobe measure URL --config FILE`` in the client namespace, against each scenario.

Every test asserts the raw OONI keys of the one record printed (failure strings in
``dns_experiment_failure``, ``tcp_connect[].status.failure``, ``tls_handshakes[].failure``,
``requests[0].failure``), then states its verdict with :func:`records.expect_verdict`, which
is checked once the analysis lands (switches in records.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import faults, servers
from .lab import Lab
from .records import (
    LOCAL_DNS_BLOCKPAGE,
    LOCAL_DNS_FINGERPRINTS,
    Record,
    answers,
    body_text,
    expect_verdict,
    final_request,
    issuer_cns,
    keys,
    sni_checks,
    tcp_failures,
    tls_failures,
)
from .services import REPO_ROOT, lab_env

pytestmark = pytest.mark.lab

Measure = Callable[..., Record]
BLOCKPAGE_PHRASE = "Страница заблокирована"
BODY_CAP = 512 * 1024  # kzprobe's default limits.body_bytes


def _cli_has_measure() -> bool:
    """Does the CLI (kzprobe/cli/__init__.py) define a ``measure`` command yet? (Read, not
    imported.)"""
    path = REPO_ROOT / "kzprobe" / "cli" / "__init__.py"
    return path.is_file() and '"measure"' in path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def measure_ready() -> None:
    """Skip only while the CLI lacks ``measure``; a broken ``measure --help`` is a failure."""
    if not _cli_has_measure():
        pytest.skip("kzprobe measure not available yet")
    proc = subprocess.run([sys.executable, "-m", "kzprobe", "measure", "--help"], cwd=REPO_ROOT,
                          env=lab_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"kzprobe measure --help failed:\n{proc.stderr[-2000:]}"


@pytest.fixture
def measure(lab: Lab, tmp_path: Path, measure_ready: None) -> Measure:
    """``measure(url, scenario=None, **config_sections)``: the one record kzprobe printed."""

    def run(url: str, scenario: str | None = None, **overrides: dict[str, Any]) -> Record:
        config = lab.write_config(tmp_path, **overrides)
        with _applied(lab, scenario):
            records = lab.measure(url, config)
        assert len(records) == 1, f"{len(records)} records for one URL"
        record = records[0]
        assert record["input"] == url and record["test_name"] == "web_connectivity"
        return record

    return run


@contextlib.contextmanager
def _applied(lab: Lab, scenario: str | None) -> Iterator[None]:
    if scenario is None:
        yield
    else:
        with lab.scenario(scenario):
            yield


def _ok_fetch(record: Record, title: str) -> dict[str, Any]:
    """The final request succeeded and served the real page (its title)."""
    request = final_request(record)
    assert request["failure"] is None and keys(record)["http_experiment_failure"] is None
    assert request["response"]["code"] == 200 and title in body_text(request)
    return request


# --------------------------------------------------------------------------- benign


def test_open_site_over_https(lab: Lab, measure: Measure) -> None:
    """A site that works: DNS, TCP, verified TLS 1.3 and a 200 with the real page."""
    record = measure(lab.url("open", "https"))
    assert keys(record)["dns_experiment_failure"] is None
    assert answers(record) == [lab.site("open").ip]
    assert tcp_failures(record) == [None] and tls_failures(record) == [None]
    assert keys(record)["tls_handshakes"][0]["tls_version"] == "TLSv1.3"
    _ok_fetch(record, servers.page_title(lab.site("open")))
    expect_verdict(record, blocking=False, accessible=True)


def test_control_helper_unreachable(lab: Lab, measure: Measure) -> None:
    """No helper answers (an unused lab address): control_failure recorded, the measurement
    complete, no interference claimed without a control."""
    dead = "http://198.18.2.250:8765/"
    record = measure(lab.url("open", "http"), control={"helper_url": [dead]},
                     timeouts={"control": 2.0})
    tk = keys(record)
    assert tk["control"] is None and tk["control_failure"] in (
        "generic_timeout_error", "host_unreachable", "connection_refused")
    _ok_fetch(record, servers.page_title(lab.site("open")))
    # OONI: no control, cleartext page: undetermined (null/null); nothing to claim.
    expect_verdict(record, blocking=None, accessible=None)


def test_open_site_over_http(lab: Lab, measure: Measure) -> None:
    """A site that works over cleartext HTTP: no TLS handshake, a 200 with the real page."""
    record = measure(lab.url("open", "http"))
    assert tcp_failures(record) == [None] and keys(record)["tls_handshakes"] == []
    _ok_fetch(record, servers.page_title(lab.site("open")))
    expect_verdict(record, blocking=False, accessible=True)


def test_site_down_everywhere(lab: Lab, measure: Measure) -> None:
    """A site whose server drops everything: connect times out, no request is made."""
    record = measure(lab.url("down", "http"))
    assert answers(record) == [lab.site("down").ip]
    assert tcp_failures(record) == ["generic_timeout_error"]
    assert keys(record)["requests"] == []
    expect_verdict(record, blocking=False, accessible=False)  # website down, not censorship


def test_nothing_listening_on_the_port(lab: Lab, measure: Measure) -> None:
    """A port nothing listens on anywhere: connection_refused, and it is not blocking."""
    record = measure(f"https://{lab.site('closed').host}:{servers.CLOSED_PORT}/")
    assert tcp_failures(record) == ["connection_refused"]
    assert keys(record)["tls_handshakes"] == []
    expect_verdict(record, blocking=False, accessible=False)


def test_dns_to_transparent_proxy_serving_the_real_page(lab: Lab, measure: Measure) -> None:
    """DNS points at an honest transparent proxy: another address, but the real page."""
    record = measure(lab.url("proxied", "http"), scenario="dns_proxy")
    assert answers(record) == [lab.proxy_ip]
    _ok_fetch(record, servers.page_title(lab.site("proxied")))
    # OONI: the page matches, so accessible; other addresses that serve the real page are
    # a difference, not interference (kzprobe lists no code).
    expect_verdict(record, blocking=False, accessible=True)


def test_redirect_chain(lab: Lab, measure: Measure) -> None:
    """Two 302 hops across hosts are followed; requests[] is newest first."""
    record = measure(lab.url("redirect", "http"))
    urls = [r["request"]["url"] for r in keys(record)["requests"]]
    assert urls == ["http://open.lab.test/", f"http://{servers.REDIRECT_HOPS[1]}/",
                    "http://hops.lab.test/"]
    assert [r["response"]["code"] for r in keys(record)["requests"]] == [200, 302, 302]
    _ok_fetch(record, servers.page_title(lab.site("open")))
    expect_verdict(record, blocking=False, accessible=True)


def test_large_file_is_capped(lab: Lab, measure: Measure) -> None:
    """A 2 MiB body is read up to the body cap and marked truncated, without failing."""
    record = measure(lab.url("large", "http"))
    request = final_request(record)
    assert request["failure"] is None and request["response"]["code"] == 200
    assert request["x_body_length"] == BODY_CAP and request["response"]["body_is_truncated"]
    expect_verdict(record, blocking=False, accessible=True)


def test_idna_name(lab: Lab, measure: Measure) -> None:
    """A Cyrillic host name is queried, handshaken and requested as its punycode A-label."""
    site = lab.site("idna")
    record = measure(lab.url("idna", "https"))
    assert {q["hostname"] for q in keys(record)["queries"]} == {site.ascii_host}
    assert keys(record)["tls_handshakes"][0]["server_name"] == site.ascii_host
    request = _ok_fetch(record, servers.page_title(site))
    assert request["request"]["url"] == f"https://{site.ascii_host}/"
    expect_verdict(record, blocking=False, accessible=True)


def test_system_resolver_uses_the_namespace_resolv_conf(lab: Lab, measure: Measure) -> None:
    """resolvers = ["system"] goes through getaddrinfo and the client's resolv.conf."""
    record = measure(lab.url("open", "https"), dns={"resolvers": ["system"]})
    assert [q["engine"] for q in keys(record)["queries"]] == ["getaddrinfo"]
    assert answers(record) == [lab.site("open").ip]
    _ok_fetch(record, servers.page_title(lab.site("open")))


# --------------------------------------------------------------------------- DNS


def test_dns_nxdomain(lab: Lab, measure: Measure) -> None:
    """The ISP resolver lies NXDOMAIN: dns_nxdomain_error and nothing is dialled."""
    record = measure(lab.url("dns_nx"), scenario="dns_nxdomain")
    assert keys(record)["dns_experiment_failure"] == "dns_nxdomain_error"
    assert keys(record)["tcp_connect"] == [] and keys(record)["requests"] == []
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.nxdomain"])


def test_dns_nxdomain_via_system_resolver(lab: Lab, measure: Measure) -> None:
    """The same lie seen through getaddrinfo is dns_nxdomain_error too."""
    record = measure(lab.url("dns_nx"), scenario="dns_nxdomain", dns={"resolvers": ["system"]})
    assert keys(record)["dns_experiment_failure"] == "dns_nxdomain_error"
    assert [q["engine"] for q in keys(record)["queries"]] == ["getaddrinfo"]


def test_dns_servfail(lab: Lab, measure: Measure) -> None:
    """The ISP resolver answers SERVFAIL: dns_servfail_error."""
    record = measure(lab.url("dns_servfail"), scenario="dns_servfail")
    assert keys(record)["dns_experiment_failure"] == "dns_servfail_error"
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.servfail"])


def test_dns_no_answer(lab: Lab, measure: Measure) -> None:
    """The ISP resolver answers NOERROR with no records: dns_no_answer, nothing dialled."""
    record = measure(lab.url("dns_empty"), scenario="dns_no_answer")
    assert keys(record)["dns_experiment_failure"] == "dns_no_answer"
    assert answers(record) == [] and keys(record)["tcp_connect"] == []
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.no_answer"])


def test_dns_silent(lab: Lab, measure: Measure) -> None:
    """The ISP resolver never answers: generic_timeout_error."""
    record = measure(lab.url("dns_silent"), scenario="dns_silent")
    assert keys(record)["dns_experiment_failure"] == "generic_timeout_error"
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.timeout"])


def test_dns_bogus_loopback_answer(lab: Lab, measure: Measure) -> None:
    """The ISP resolver answers 127.0.0.2 (lab default: 127/8 not a bogon, so it is dialled)."""
    record = measure(lab.url("dns_bogus"), scenario="dns_bogus")
    assert keys(record)["dns_experiment_failure"] is None
    assert answers(record) == ["127.0.0.2"]
    assert all(c["ip"] == "127.0.0.2" for c in keys(record)["tcp_connect"])
    assert "connection_refused" in tcp_failures(record)
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.inconsistent"])


def test_dns_bogus_answer_is_a_bogon(lab: Lab, measure: Measure) -> None:
    """With only the lab's own range exempt, 127.0.0.2 is a bogon: never dialled, dns.bogon."""
    record = measure(lab.url("dns_bogus"), scenario="dns_bogus",
                     analysis={"not_bogon": ["198.18.0.0/15"]})
    assert answers(record) == ["127.0.0.2"]
    assert keys(record)["tcp_connect"] == [] and keys(record)["requests"] == []
    expect_verdict(record, blocking="dns", accessible=False, interference=["dns.bogon"])


def test_dns_redirect_to_blockpage(lab: Lab, measure: Measure) -> None:
    """The ISP resolver points the name at its blockpage server, which serves the blockpage."""
    record = measure(lab.url("dns_blockpage", "http"), scenario="dns_blockpage")
    assert answers(record) == [lab.blockpage_ip]
    request = final_request(record)
    assert request["failure"] is None and BLOCKPAGE_PHRASE in body_text(request)
    # OONI LTE calls this accessible: status 200 matches, and both sides send Content-Length,
    # an "uncommon" header, so headers_match is true and there is no http-diff (the known
    # heuristic gap, ooni/probe#2311). kzprobe's fingerprint match is what catches it.
    expect_verdict(record, blocking=False, accessible=True,
                   interference=["dns.inconsistent", "http.blockpage"],
                   blockpage=lambda name: bool(name))


# The blockpage server listens on :80 only. Over HTTPS the DNS answer is the only evidence
# (443 refused there and at the control); over HTTP the page matches a bundled fingerprint
# too, and kzprobe names the page match in `blockpage` (interference.py: page before DNS).
LOCAL_FP_CASES = {
    "https": ("dns", False, ["dns.blockpage"], LOCAL_DNS_BLOCKPAGE),
    "http": (False, True, ["dns.blockpage", "http.blockpage"], "cp.d_corp_kz_ps"),
}


@pytest.mark.parametrize("scheme", LOCAL_FP_CASES)
def test_dns_redirect_to_blockpage_known_to_a_local_fingerprint(
        lab: Lab, measure: Measure, tmp_path: Path, scheme: str) -> None:
    """With a local fingerprint file naming the blockpage address, the answer is dns.blockpage."""
    (tmp_path / "local.csv").write_text(LOCAL_DNS_FINGERPRINTS, encoding="utf-8")
    record = measure(lab.url("dns_blockpage", scheme), scenario="dns_blockpage",
                     analysis={"fingerprint_files": ["local.csv"]})  # next to the config
    assert answers(record) == [lab.blockpage_ip]
    blocking, accessible, codes, shown = LOCAL_FP_CASES[scheme]
    if scheme == "https":
        assert tcp_failures(record) == ["connection_refused"] and keys(record)["requests"] == []
    else:
        assert BLOCKPAGE_PHRASE in body_text(final_request(record))
    expect_verdict(record, blocking=blocking, accessible=accessible, interference=codes,
                   blockpage=shown)


# --------------------------------------------------------------------------- TCP/IP


def test_syn_reject(lab: Lab, measure: Measure) -> None:
    """An RST to the SYN: connection_refused, no TLS, no request."""
    record = measure(lab.url("syn_reject"), scenario="syn_reject")
    assert tcp_failures(record) == ["connection_refused"]
    assert keys(record)["tls_handshakes"] == [] and keys(record)["requests"] == []
    expect_verdict(record, blocking="tcp_ip", accessible=False, interference=["tcp.refused"])


def test_syn_drop(lab: Lab, measure: Measure) -> None:
    """A dropped SYN: generic_timeout_error on connect."""
    record = measure(lab.url("syn_drop"), scenario="syn_drop")
    assert tcp_failures(record) == ["generic_timeout_error"]
    expect_verdict(record, blocking="tcp_ip", accessible=False, interference=["tcp.timeout"])


def test_reset_aimed_at_the_address(lab: Lab, measure: Measure) -> None:
    """Any data to the address draws an RST: the benign SNI is reset too, so it is tcp.reset."""
    record = measure(lab.url("addr_rst"), scenario="addr_rst")
    assert tcp_failures(record) == [None]
    assert tls_failures(record) == ["connection_reset"]
    assert keys(record)["requests"] == []
    assert sni_checks(record) == [(lab.site("open").host, "connection_reset")]
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["tcp.reset"], sni_blocking_confirmed=False)


# --------------------------------------------------------------------------- TLS


def _sni_fault(lab: Lab, measure: Measure, scenario: str, failure: str) -> Record:
    """TCP works, the handshake with the URL's SNI fails, the benign SNI works (SNI-keyed)."""
    record = measure(lab.url(scenario), scenario=scenario)
    assert tcp_failures(record) == [None]
    assert tls_failures(record) == [failure]
    assert keys(record)["requests"] == []
    assert keys(record)["http_experiment_failure"] == failure
    assert sni_checks(record) == [(lab.site("open").host, None)]
    return record


def test_tls_reset_on_sni(lab: Lab, measure: Measure) -> None:
    """RST injected on the ClientHello's SNI: connection_reset, benign SNI unaffected."""
    record = _sni_fault(lab, measure, "tls_rst", "connection_reset")
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["tls.reset"], sni_blocking_confirmed=True)


def test_tls_blackhole_on_sni(lab: Lab, measure: Measure) -> None:
    """The flow is dropped after the SNI (KZ 2023-24): generic_timeout_error in TLS."""
    record = _sni_fault(lab, measure, "tls_blackhole", "generic_timeout_error")
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["tls.timeout"], sni_blocking_confirmed=True)


def test_tls_fin_on_sni(lab: Lab, measure: Measure) -> None:
    """A clean FIN right after the ClientHello: eof_error, not connection_reset."""
    record = _sni_fault(lab, measure, "tls_fin", "eof_error")
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["tls.eof"], sni_blocking_confirmed=True)


def test_tls_mitm(lab: Lab, measure: Measure) -> None:
    """Interception with the 2019 chain: ssl_unknown_authority, the sent chain is recorded."""
    record = measure(lab.url("tls_mitm"), scenario="tls_mitm")
    assert tcp_failures(record) == [None]
    assert tls_failures(record) == ["ssl_unknown_authority"]
    handshake = keys(record)["tls_handshakes"][0]
    assert issuer_cns(handshake) == ["Security Certificate", "Qaznet Trust Network"]
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["tls.mitm"], tls_mitm_issuer="Security Certificate")


def test_tls_delay_after_sni(lab: Lab, measure: Measure) -> None:
    """Server bytes held after the SNI: the handshake succeeds but slowly; benign SNI is fast."""
    record = measure(lab.url("tls_delay"), scenario="tls_delay",
                     timeouts={"tls": faults.DELAY_SECONDS + 2, "http": 4.0})
    handshake = keys(record)["tls_handshakes"][0]
    assert handshake["failure"] is None
    assert handshake["t"] - handshake["t0"] >= faults.DELAY_SECONDS * 0.95
    _ok_fetch(record, servers.page_title(lab.site("tls_delay")))
    checks = keys(record)["x_sni_checks"]
    assert [(h["server_name"], h["failure"]) for h in checks] == [(lab.site("open").host, None)]
    assert checks[0]["t"] - checks[0]["t0"] < 1.0
    expect_verdict(record, blocking=False, accessible=True, interference=["throttling"],
                   sni_blocking_confirmed=True)


# --------------------------------------------------------------------------- HTTP


def test_http_reset_on_host(lab: Lab, measure: Measure) -> None:
    """RST injected on the request's Host header: requests[0].failure is connection_reset."""
    record = measure(lab.url("http_rst", "http"), scenario="http_rst")
    assert tcp_failures(record) == [None]
    assert final_request(record)["failure"] == "connection_reset"
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["http.reset"])


def test_http_blackhole_on_host(lab: Lab, measure: Measure) -> None:
    """The flow is dropped after the request: generic_timeout_error on the request."""
    record = measure(lab.url("http_blackhole", "http"), scenario="http_blackhole")
    assert tcp_failures(record) == [None]
    assert final_request(record)["failure"] == "generic_timeout_error"
    expect_verdict(record, blocking="http-failure", accessible=False,
                   interference=["http.timeout"])


def test_http_fin_on_host(lab: Lab, measure: Measure) -> None:
    """A clean FIN right after the request: eof_error on the request."""
    record = measure(lab.url("http_fin", "http"), scenario="http_fin")
    assert tcp_failures(record) == [None]
    assert final_request(record)["failure"] == "eof_error"
    expect_verdict(record, blocking="http-failure", accessible=False, interference=["http.eof"])


def test_http_blockpage_by_transparent_proxy(lab: Lab, measure: Measure) -> None:
    """A transparent proxy on the path answers the Host with the ISP blockpage."""
    record = measure(lab.url("http_blockpage", "http"), scenario="http_blockpage")
    assert answers(record) == [lab.site("http_blockpage").ip]
    request = final_request(record)
    assert request["failure"] is None and request["response"]["code"] == 200
    assert BLOCKPAGE_PHRASE in body_text(request)
    # OONI LTE: no http-diff, for the reason given in test_dns_redirect_to_blockpage.
    expect_verdict(record, blocking=False, accessible=True,
                   interference=["http.blockpage"], blockpage=lambda name: bool(name))


def test_http_diff_unknown_notice(lab: Lab, measure: Measure) -> None:
    """A transparent proxy answers a 403 notice no fingerprint knows: http-diff, no blockpage."""
    record = measure(lab.url("http_diff", "http"), scenario="http_diff")
    assert answers(record) == [lab.site("http_diff").ip]
    request = final_request(record)
    assert request["failure"] is None
    assert request["response"]["code"] == servers.RESTRICTED_STATUS
    assert servers.RESTRICTED_PHRASE in body_text(request)
    expect_verdict(record, blocking="http-diff", accessible=False, interference=["http.diff"],
                   blockpage=None)


def test_throttle_after_sni(lab: Lab, measure: Measure) -> None:
    """The body is capped after the SNI: complete, at most that rate; the benign SNI is fast."""
    record = measure(lab.url("throttle", "https"), scenario="throttle", timeouts={"http": 8.0})
    request = final_request(record)
    assert request["failure"] is None and request["x_body_length"] == servers.THROTTLED_SIZE
    assert request["x_body_seconds"] >= servers.THROTTLED_SIZE / faults.THROTTLE_RATE * 0.8
    assert keys(record)["x_timings"]["body_bytes_per_s"] <= faults.THROTTLE_RATE * 1.3
    # Over plain HTTP the same cap gets no code: there is no benign handshake to compare with.
    expect_verdict(record, blocking=False, accessible=True, interference=["throttling"])
