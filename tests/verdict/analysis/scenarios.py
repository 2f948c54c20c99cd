"""Recorded-observation scenarios with the OONI keys and kzprobe codes they must produce.

Each scenario is built with :mod:`builders` the way the probe records it. Expected OONI keys
were worked out by hand from the LTE rules (``analysisclassic.go``), so a regression in the
port shows up as a mismatch here as well as in the OONI QA corpus test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .builders import Record, control_page
from .pki import honest_chain, qaznet_chain
from .quic_scenarios import add_h3, control_h3

H, WWW = "news.example", "www.news.example"
URL, HTTP_URL = f"https://{H}/", f"http://{H}/"
REAL, REAL2, LIE = "93.184.216.34", "93.184.216.35", "5.6.7.8"
BLOCKPAGE_IP = "62.33.207.196"  # ooni.ru_97 in ooni/blocking-fingerprints (scope nat)
PAGE_LEN, TITLE = 1000, "News today"
PAGE = "<title>News today</title>" + "x" * (PAGE_LEN - 25)
KZ_BLOCKPAGE = ("<html><head><title>Ескерту</title></head><body>"
                "Ресурста ақпараттық қауіпсіздікке төнетін қауіп-қатер бар</body></html>")

DEFAULT_KEYS: dict[str, Any] = {
    "dns_consistency": None, "body_length_match": None, "body_proportion": 0.0,
    "status_code_match": None, "headers_match": None, "title_match": None, "blocking": None,
    "accessible": None, "http_experiment_failure": None, "x_blocking_flags": 0, "x_dns_flags": 0,
}
SAME_PAGE = {"body_length_match": True, "body_proportion": 1.0, "status_code_match": True,
             "headers_match": False, "title_match": True}
OK_SITE = {"dns_consistency": "consistent", "blocking": False, "accessible": True,
           "x_blocking_flags": 32, **SAME_PAGE}


@dataclass(frozen=True)
class Scenario:
    """One recorded measurement and what the analysis must say about it."""

    name: str
    url: str
    keys: dict[str, Any]
    ooni: dict[str, Any]
    codes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def expected_ooni(self) -> dict[str, Any]:
        return {**DEFAULT_KEYS, **self.ooni}


def full_control(rec: Record, *, port: int = 443, http: dict[str, Any] | None = None,
                 addrs: tuple[str, ...] = (REAL,)) -> Record:
    """The control reached everything: DNS, TCP/TLS to every address, the page."""
    eps = {f"{a}:{port}": True for a in addrs}
    return rec.control(addrs=addrs, tcp=eps, tls=eps if port == 443 else {}, sni=H,
                       http=http or control_page(length=PAGE_LEN, title=TITLE))


def https_flow(rec: Record, ip: str = REAL, *, sni: str = H, depth: int = 0,
               url: str = URL, **tls: Any) -> int:
    txid = rec.tcp(ip, 443, depth=depth)
    rec.tls(txid, ip, 443, sni, depth=depth, **tls)
    return txid


def site_fine_https() -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body=PAGE)
    return Scenario("site_fine_https", URL, full_control(rec).keys, OK_SITE)


def site_fine_http() -> Scenario:
    rec = Record(HTTP_URL).dns(H, (REAL,))
    txid = rec.tcp(REAL, 80)
    rec.http(txid, HTTP_URL, REAL, 80, body=PAGE)
    return Scenario("site_fine_http", HTTP_URL, full_control(rec, port=80).keys, OK_SITE)


def site_down_everywhere() -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    rec.tcp(REAL, 443, failure="generic_timeout_error")
    rec.control(addrs=(REAL,), tcp={f"{REAL}:443": False})
    return Scenario("site_down_everywhere", URL, rec.keys, {
        "dns_consistency": "consistent", "blocking": False, "accessible": False,
        "http_experiment_failure": "generic_timeout_error"})


def name_gone_everywhere() -> Scenario:
    rec = Record(URL).dns(H, failure="dns_nxdomain_error")
    rec.control(dns_failure="dns_name_error")
    return Scenario("name_gone_everywhere", URL, rec.keys, {
        "dns_consistency": "consistent", "blocking": False, "accessible": False,
        "http_experiment_failure": "dns_nxdomain_error"})


def dns_failure(failure: str, code: str, query_type: str = "A") -> Scenario:
    rec = Record(URL).dns(H, failure=failure, query_type=query_type)
    rec.control(addrs=(REAL,), http=control_page(length=PAGE_LEN, title=TITLE))
    return Scenario(f"dns_{failure}", URL, rec.keys, {
        "dns_consistency": "inconsistent", "blocking": "dns", "accessible": False,
        "http_experiment_failure": failure, "x_blocking_flags": 1, "x_dns_flags": 2}, (code,))


def bogus_loopback_answer() -> Scenario:
    rec = full_control(Record(URL).dns(H, ("127.0.0.2",)))
    return Scenario("bogus_loopback_answer", URL, rec.keys, {
        "dns_consistency": "inconsistent", "blocking": "dns", "accessible": False,
        "x_blocking_flags": 1, "x_dns_flags": 5}, ("dns.bogon",))


def blockpage_ip_answer() -> Scenario:
    rec = Record(HTTP_URL).dns(H, (BLOCKPAGE_IP,))
    txid = rec.tcp(BLOCKPAGE_IP, 80)
    rec.http(txid, HTTP_URL, BLOCKPAGE_IP, 80, body="<html><body>hello</body></html>")
    rec.control(addrs=(REAL,), tcp={f"{REAL}:80": True, f"{BLOCKPAGE_IP}:80": True},
                http=control_page(length=PAGE_LEN, title=TITLE))
    return Scenario("blockpage_ip_answer", HTTP_URL, rec.keys, {
        "dns_consistency": "inconsistent", "blocking": "dns", "accessible": False,
        "body_length_match": False, "body_proportion": 31 / PAGE_LEN, "status_code_match": True,
        "headers_match": False, "title_match": False, "x_blocking_flags": 17, "x_dns_flags": 4,
    }, ("dns.blockpage",), {"blockpage": "ooni.ru_97"})


def tcp_failure(failure: str, code: str) -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    rec.tcp(REAL, 443, failure=failure)
    return Scenario(f"tcp_{failure}", URL, full_control(rec).keys, {
        "dns_consistency": "consistent", "blocking": "tcp_ip", "accessible": False,
        "http_experiment_failure": failure, "x_blocking_flags": 2}, (code,))


def tls_failure_confirmed(failure: str, code: str) -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure=failure)
    rec.sni_check(REAL, 443)
    return Scenario(f"tls_{failure}_sni_confirmed", URL, full_control(rec).keys, {
        "dns_consistency": "consistent", "blocking": "http-failure", "accessible": False,
        "http_experiment_failure": failure, "x_blocking_flags": 4}, (code,),
        {"sni_blocking_confirmed": True})


def tls_timeout_without_control(check_failure: str | None) -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="generic_timeout_error")
    rec.sni_check(REAL, 443, failure=check_failure).control_failed()
    confirmed = check_failure is None
    return Scenario(f"tls_timeout_no_control_check_{'ok' if confirmed else 'failed'}", URL,
                    rec.keys, {"http_experiment_failure": "generic_timeout_error"},
                    ("tls.timeout",) if confirmed else (),
                    {"sni_blocking_confirmed": confirmed})


def mitm_qaznet(with_control: bool) -> Scenario:
    leaf, inter, _root = qaznet_chain(H)
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="ssl_unknown_authority", certs=(leaf, inter))
    if with_control:
        full_control(rec)
        ooni = {"dns_consistency": "consistent", "blocking": "http-failure", "accessible": False,
                "http_experiment_failure": "ssl_unknown_authority", "x_blocking_flags": 4}
    else:
        rec.control_failed()
        ooni = {"http_experiment_failure": "ssl_unknown_authority"}
    return Scenario(f"mitm_qaznet_{'control' if with_control else 'no_control'}", URL, rec.keys,
                    ooni, ("tls.mitm",), {"tls_mitm_issuer": "Security Certificate",
                                          "x_tls_mitm_known": "Qaznet Trust Network"})


def unknown_authority_site_own() -> Scenario:
    """A self-signed site: the control's handshake fails too, so no code."""
    leaf, root = honest_chain(H)
    rec = Record(URL).dns(H, (REAL,))
    https_flow(rec, failure="ssl_unknown_authority", certs=(leaf, root))
    rec.control(addrs=(REAL,), tcp={f"{REAL}:443": True}, tls={f"{REAL}:443": False}, sni=H)
    return Scenario("unknown_authority_site_own", URL, rec.keys, {
        "dns_consistency": "consistent", "blocking": False, "accessible": False,
        "http_experiment_failure": "ssl_unknown_authority"}, (), {"tls_mitm_issuer": None})


def http_page(name: str, body: str, codes: tuple[str, ...], extra: dict[str, Any]) -> Scenario:
    rec = Record(HTTP_URL).dns(H, (REAL,))
    txid = rec.tcp(REAL, 80)
    rec.http(txid, HTTP_URL, REAL, 80, body=body)
    length = len(body.encode())
    return Scenario(name, HTTP_URL, full_control(rec, port=80).keys, {
        "dns_consistency": "consistent", "blocking": "http-diff", "accessible": False,
        "body_length_match": False, "body_proportion": length / PAGE_LEN,
        "status_code_match": True, "headers_match": False, "title_match": False,
        "x_blocking_flags": 16}, codes, extra)


def blockpage_body() -> Scenario:
    return http_page("blockpage_body", KZ_BLOCKPAGE, ("http.blockpage",),
                     {"blockpage": "cp.f_gen_ru_8_satellite"})


def http_diff_page() -> Scenario:
    return http_page("http_diff", "<html><head><title>Something else</title></head>"
                     "<body>Totally different content here</body></html>", ("http.diff",),
                     {"blockpage": None})


def transparent_proxy() -> Scenario:
    rec = Record(HTTP_URL).dns(H, (REAL,))
    txid = rec.tcp(REAL, 80)
    rec.http(txid, HTTP_URL, REAL, 80, body=PAGE, headers={"Via": "1.1 squid", "X-Cache": "MISS"})
    return Scenario("transparent_proxy_real_page", HTTP_URL, full_control(rec, port=80).keys,
                    OK_SITE)


def throttled(kind: str) -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    slow_tls = kind == "handshake"
    txid = https_flow(rec, t0=0.03, t=4.03 if slow_tls else 0.13)
    rec.http(txid, URL, REAL, 443, body=PAGE, ttfb=6.0 if kind == "ttfb" else 0.05)
    rec.sni_check(REAL, 443, t0=5.0, t=5.1)
    extra = {"sni_blocking_confirmed": True if slow_tls else None}
    return Scenario(f"throttled_{kind}", URL, full_control(rec).keys, OK_SITE, ("throttling",),
                    extra)


def slow_everywhere() -> Scenario:
    """A slow path, not an SNI: the benign handshake is slow too."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec, t0=0.03, t=2.53)
    rec.http(txid, URL, REAL, 443, body=PAGE)
    rec.sni_check(REAL, 443, t0=3.0, t=4.0)
    return Scenario("slow_everywhere", URL, full_control(rec).keys, OK_SITE, (),
                    {"sni_blocking_confirmed": False})


def redirect_chain(tls_failure: str | None) -> Scenario:
    rec = Record(HTTP_URL).dns(H, (REAL,))
    first = rec.tcp(REAL, 80)
    rec.http(first, HTTP_URL, REAL, 80, code=301, headers={"Location": f"https://{WWW}/"})
    rec.dns(WWW, (REAL2,), depth=1)
    second = https_flow(rec, REAL2, sni=WWW, depth=1, failure=tls_failure)
    if tls_failure is None:
        rec.http(second, f"https://{WWW}/", REAL2, 443, body=PAGE, depth=1)
    full_control(rec, port=80)
    if tls_failure is None:
        return Scenario("redirect_chain", HTTP_URL, rec.keys, OK_SITE)
    return Scenario("redirect_chain_tls_reset", HTTP_URL, rec.keys, {
        "dns_consistency": "consistent", "blocking": "http-failure", "accessible": False,
        "http_experiment_failure": tls_failure, "x_blocking_flags": 4}, ("tls.reset",))


def no_control(url: str) -> Scenario:
    rec = Record(url).dns(H, (REAL,))
    if url.startswith("https"):
        txid = https_flow(rec)
        rec.http(txid, url, REAL, 443, body=PAGE)
        ooni: dict[str, Any] = {"blocking": False, "accessible": True, "x_blocking_flags": 32}
    else:
        txid = rec.tcp(REAL, 80)
        rec.http(txid, url, REAL, 80, body=PAGE)
        ooni = {}
    name = "no_control_https" if url.startswith("https") else "no_control_http"
    return Scenario(name, url, rec.control_failed().keys, ooni)


def dns_lie_and_sni_reset() -> Scenario:
    rec = Record(URL).dns(H, (LIE,))
    rec.dns(H, (REAL,), classic=False, resolver="127.0.0.1:5354")
    rec.tcp(LIE, 443, failure="generic_timeout_error")
    https_flow(rec, REAL, failure="connection_reset")
    rec.control(addrs=(REAL,), tcp={f"{REAL}:443": True, f"{LIE}:443": False},
                tls={f"{REAL}:443": True}, sni=H,
                http=control_page(length=PAGE_LEN, title=TITLE))
    return Scenario("dns_lie_and_sni_reset", URL, rec.keys, {
        "dns_consistency": "inconsistent", "blocking": "dns", "accessible": False,
        "http_experiment_failure": "generic_timeout_error", "x_blocking_flags": 5,
        "x_dns_flags": 4}, ("dns.inconsistent", "tls.reset"))


def http_failure(failure: str, code: str) -> Scenario:
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, failure=failure)
    return Scenario(f"http_{failure}_after_tls", URL, full_control(rec).keys, {
        "dns_consistency": "consistent", "blocking": "http-failure", "accessible": False,
        "http_experiment_failure": failure, "x_blocking_flags": 8}, (code,))


def aaaa_no_answer() -> Scenario:
    """IPv6-less sites are normal: no AAAA answer is not interference."""
    rec = Record(URL).dns(H, (REAL,)).dns(H, failure="dns_no_answer", query_type="AAAA")
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body=PAGE)
    return Scenario("aaaa_no_answer", URL, full_control(rec).keys, OK_SITE)


def quic_failure(handshake: str | None, request: str | None, code: str) -> Scenario:
    """HTTPS works, HTTP/3 fails while the control's HTTP/3 worked: accessible, plus a code."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body=PAGE)
    full_control(rec)
    add_h3(rec, REAL, H, URL, handshake=handshake, request=request)
    control_h3(rec, REAL, H, ok=True)
    return Scenario(f"quic_{handshake or 'ok'}_{request or 'ok'}", URL, rec.keys, OK_SITE,
                    (code,))


BUILDERS: list[Callable[[], Scenario]] = [
    site_fine_https, site_fine_http, site_down_everywhere, name_gone_everywhere,
    lambda: dns_failure("dns_nxdomain_error", "dns.nxdomain"),
    lambda: dns_failure("generic_timeout_error", "dns.timeout"),
    lambda: dns_failure("dns_servfail_error", "dns.servfail"),
    lambda: dns_failure("dns_no_answer", "dns.no_answer"),
    bogus_loopback_answer, blockpage_ip_answer,
    lambda: tcp_failure("connection_refused", "tcp.refused"),
    lambda: tcp_failure("generic_timeout_error", "tcp.timeout"),
    lambda: tcp_failure("connection_reset", "tcp.reset"),
    lambda: tls_failure_confirmed("connection_reset", "tls.reset"),
    lambda: tls_failure_confirmed("generic_timeout_error", "tls.timeout"),
    lambda: tls_failure_confirmed("eof_error", "tls.eof"),
    lambda: tls_timeout_without_control(None),
    lambda: tls_timeout_without_control("generic_timeout_error"),
    lambda: mitm_qaznet(True), lambda: mitm_qaznet(False), unknown_authority_site_own,
    blockpage_body, http_diff_page, transparent_proxy,
    lambda: throttled("handshake"), lambda: throttled("ttfb"), slow_everywhere,
    lambda: redirect_chain(None), lambda: redirect_chain("connection_reset"),
    lambda: no_control(URL), lambda: no_control(HTTP_URL),
    dns_lie_and_sni_reset, aaaa_no_answer,
    lambda: http_failure("connection_reset", "http.reset"),
    lambda: http_failure("generic_timeout_error", "http.timeout"),
    lambda: http_failure("eof_error", "http.eof"),
    lambda: quic_failure("generic_timeout_error", None, "quic.timeout"),
    lambda: quic_failure("connection_refused", None, "quic.reset"),
    lambda: quic_failure("ssl_failed_handshake", None, "quic.invalid"),
    lambda: quic_failure(None, "eof_error", "quic.eof"),
]


def all_scenarios() -> list[Scenario]:
    """Every scenario, built fresh."""
    return [build() for build in BUILDERS]
