"""The analysis never raises, whatever a record holds."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzprobe.netaddr import join_hostport
from kzprobe.verdict.analysis.fingerprints import Signature, build_fingerprints
from kzprobe.verdict.analysis.interference import CODES, AnalysisParams, interference
from kzprobe.verdict.analysis.webconnectivity import analyze

FAILURES = st.sampled_from([None, None, "generic_timeout_error", "connection_reset",
                            "connection_refused", "eof_error", "ssl_unknown_authority",
                            "ssl_invalid_hostname", "dns_nxdomain_error", "dns_no_answer",
                            "dns_servfail_error", "network_unreachable", "unknown_failure: x"])
IPS = st.sampled_from(["93.184.216.34", "127.0.0.2", "10.0.0.1", "::1", "2a00::1",
                       "62.33.207.196", "garbage", "", "::ffff:1.2.3.4"])
HOSTS = st.sampled_from(["news.example", "www.news.example", "яндекс.рф", ""])
TAGS = st.lists(st.sampled_from(["classic", "depth=0", "depth=1", "depth=x", "fetch_body=true",
                                 "fetch_body=false", "sni=benign"]), max_size=4)
NUMBERS = st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-5, 10**6), st.booleans())
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(max_size=10)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=5), inner,
                                                            max_size=3)), max_leaves=10)
BODY = st.one_of(st.text(max_size=200), st.binary(max_size=100).map(
    lambda b: {"format": "base64", "data": __import__("base64").b64encode(b).decode()}),
    st.just({"format": "base64", "data": "%%%"}), JSON)


query = st.fixed_dictionaries({
    "hostname": HOSTS, "query_type": st.sampled_from(["A", "AAAA", "ANY", 7]),
    "engine": st.sampled_from(["udp", "getaddrinfo", "doh", None]), "failure": FAILURES,
    "answers": st.one_of(st.lists(st.one_of(
        IPS.map(lambda ip: {"answer_type": "AAAA" if ":" in ip else "A",
                            "ipv6" if ":" in ip else "ipv4": ip}),
        HOSTS.map(lambda h: {"answer_type": "CNAME", "hostname": h}), JSON), max_size=3), JSON),
    "transaction_id": st.one_of(st.integers(0, 6), JSON), "tags": TAGS, "t0": NUMBERS,
    "t": NUMBERS})
tcp = st.builds(lambda ip, port, fail, txid, tags: {
    "ip": ip, "port": port, "status": {"success": fail is None, "failure": fail},
    "transaction_id": txid, "tags": tags, "t0": 0.0, "t": 0.1},
    IPS, st.sampled_from([80, 443, "443"]), FAILURES, st.integers(0, 6), TAGS)
tls = st.builds(lambda ip, sni, fail, txid, tags, certs, t0, t: {
    "address": join_hostport(ip, 443), "server_name": sni, "failure": fail, "transaction_id": txid,
    "tags": tags, "peer_certificates": certs, "t0": t0, "t": t, "no_tls_verify": False},
    IPS, HOSTS, FAILURES, st.integers(0, 6), TAGS, st.one_of(st.lists(BODY, max_size=2), JSON),
    NUMBERS, NUMBERS)
request = st.builds(lambda ip, fail, txid, tags, code, body, headers, url, ttfb: {
    "address": join_hostport(ip, 443), "failure": fail, "transaction_id": txid, "tags": tags,
    "request": {"url": url}, "response": {"code": code, "body": body, "headers": headers,
                                          "body_is_truncated": False},
    "x_ttfb": ttfb, "x_body_length": ttfb, "x_body_seconds": ttfb},
    IPS, FAILURES, st.integers(0, 6), TAGS, st.one_of(st.integers(-1, 600), JSON), BODY,
    st.one_of(st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), BODY),
                              max_size=3), JSON),
    st.sampled_from(["https://news.example/", "http://news.example/", "", "::"]), NUMBERS)
control = st.one_of(st.none(), JSON, st.fixed_dictionaries({
    "dns": st.fixed_dictionaries({"failure": FAILURES, "addrs": st.lists(IPS, max_size=3)}),
    "tcp_connect": st.dictionaries(IPS.map(lambda ip: join_hostport(ip, 443)),
                                   st.fixed_dictionaries({"status": st.booleans(),
                                                          "failure": FAILURES}), max_size=2),
    "tls_handshake": st.dictionaries(IPS.map(lambda ip: join_hostport(ip, 443)),
                                     st.fixed_dictionaries({"status": st.booleans(),
                                                            "server_name": HOSTS}), max_size=2),
    "http_request": st.one_of(JSON, st.fixed_dictionaries({
        "failure": FAILURES, "status_code": st.integers(-1, 600),
        "body_length": st.integers(-1, 10**6), "title": st.text(max_size=20),
        "headers": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)})),
    "ip_info": st.dictionaries(IPS, st.fixed_dictionaries({"asn": NUMBERS, "flags": NUMBERS}),
                               max_size=2)}))


def _lists(entry: Any) -> Any:
    return st.one_of(st.lists(entry, max_size=4), JSON)


test_keys = st.fixed_dictionaries({
    "queries": _lists(query), "tcp_connect": _lists(tcp), "tls_handshakes": _lists(tls),
    "requests": _lists(request), "x_sni_checks": _lists(tls), "control": control,
    "control_failure": st.one_of(st.none(), st.just("generic_timeout_error"))})
FSET = build_fingerprints([Signature("bp", "news", "isp", "body", "contains", "blocked"),
                           Signature("d", "isp", "nat", "dns", "full", "62.33.207.196")])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(test_keys, st.sampled_from(["https://news.example/", "http://яндекс.рф/", "", "::bad"]))
def test_format_shaped_records_never_raise(keys: dict[str, Any], url: str) -> None:
    """Records shaped like the format, with wrong types anywhere, always analyse."""
    oo = analyze(keys, url=url)
    assert oo.blocking in (None, False, "dns", "tcp_ip", "http-failure", "http-diff")
    result = interference(keys, oo=oo, fingerprints=FSET, config=AnalysisParams(), url=url or None)
    assert set(result.codes) <= set(CODES) and list(result.codes) == sorted(result.codes)
    assert result.as_dict()["interference"] == list(result.codes)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["queries", "tcp_connect", "tls_handshakes", "requests",
                                        "x_sni_checks", "control", "control_failure"]), JSON))
def test_arbitrary_json_never_raises(keys: dict[str, Any]) -> None:
    """Arbitrary JSON under the format's keys never raises."""
    oo = analyze(keys, url="https://news.example/")
    interference(keys, oo=oo, fingerprints=FSET, config=AnalysisParams())
