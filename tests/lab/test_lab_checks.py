"""Self-checks with plain-Python clients: honest paths work, each fault shows its raw symptom.

These run before kzprobe is judged against the lab: if a fault did not produce its raw symptom
here (ECONNRESET, timeout, EOF, a lie in DNS ...), a kzprobe test using it would prove nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kzprobe.simnet.blockpage import BLOCKPAGE_HTML
from kzprobe.verdict.analysis.fingerprints import (
    build_fingerprints,
    load_fingerprints,
    match_dns,
    match_http,
    read_ooni_csv,
)

from . import faults, servers
from .lab import Lab
from .netns import LabError
from .records import LOCAL_DNS_BLOCKPAGE, LOCAL_DNS_FINGERPRINTS

pytestmark = pytest.mark.lab

T = 1.0  # client timeout for the timeout symptoms: short, the faults are local


def tls(lab: Lab, key: str, timeout: float = 3.0) -> dict[str, Any]:
    site = lab.site(key)
    return lab.raw("tls", site.ascii_host, "--ip", site.ip, "--cafile", str(lab.ca_file),
                   timeout=timeout)


def http(lab: Lab, key: str, scheme: str = "http", timeout: float = 3.0,
         path: str = "/") -> dict[str, Any]:
    url = f"{scheme}://{lab.site(key).ascii_host}{path}"
    return lab.raw("http", url, "--cafile", str(lab.ca_file), timeout=timeout)


def dns(lab: Lab, key: str, timeout: float = 2.0) -> dict[str, Any]:
    return lab.raw("dns", lab.site(key).ascii_host, "--server", lab.resolver_ip, timeout=timeout)


# --------------------------------------------------------------------------- honest paths


def test_system_resolver_is_the_isp_resolver(lab: Lab) -> None:
    """getaddrinfo in the client namespace resolves lab names through the ISP resolver."""
    assert lab.raw("resolve", "open.lab.test")["answers"] == [lab.site("open").ip]


def test_isp_resolver_forwards_honestly(lab: Lab) -> None:
    """The ISP resolver answers every site with its real address when no scenario is active."""
    for key in ("open", "tls_rst", "dns_nx", "idna"):
        assert dns(lab, key)["answers"] == [lab.site(key).ip], key


def test_http_and_https_fetch_through_the_router(lab: Lab) -> None:
    """A plain GET over HTTP and over verified HTTPS returns the site's own page."""
    title = servers.page_title(lab.site("open"))
    for scheme in ("http", "https"):
        got = http(lab, "open", scheme)
        assert got["status"] == 200 and title in got["body"], scheme
        assert got["headers"]["X-Lab-Site"] == "open"


def test_sites_see_the_client_address(lab: Lab) -> None:
    """The echo site sees 198.18.1.2: the router forwards without NAT."""
    got = http(lab, "echo")
    assert got["headers"]["X-Client-IP"] == lab.client_ip


def test_idna_site_is_served_under_its_a_label(lab: Lab) -> None:
    """The Cyrillic site resolves and serves HTTPS with a certificate for its punycode name."""
    site = lab.site("idna")
    assert site.ascii_host.startswith("xn--")
    assert tls(lab, "idna")["version"] == "TLSv1.3"
    assert http(lab, "idna", "https")["status"] == 200


def test_redirect_chain_and_large_file(lab: Lab) -> None:
    """The redirect site 302s to a second hop; the large site sends its full size."""
    first = http(lab, "redirect")
    assert first["status"] == 302
    assert first["headers"]["Location"] == f"http://{servers.REDIRECT_HOPS[1]}/"
    large = http(lab, "large", timeout=10.0)
    assert large["status"] == 200 and large["body_len"] == servers.LARGE_SIZE


def test_down_site_times_out_and_closed_port_refuses(lab: Lab) -> None:
    """The down site drops everything (timeout); a port nothing listens on refuses."""
    assert lab.raw("tcp", lab.site("down").ip, "80", timeout=T)["error"] == "TimeoutError"
    closed = lab.raw("tcp", lab.site("closed").ip, str(servers.CLOSED_PORT))
    assert closed["errno"] == "ECONNREFUSED"


def test_every_scenario_is_removed_cleanly(lab: Lab) -> None:
    """After a scenario ends its site is honest again (checked on the RST and DNS faults)."""
    with lab.scenario("tls_rst"):
        assert tls(lab, "tls_rst")["errno"] == "ECONNRESET"
    assert tls(lab, "tls_rst")["version"] == "TLSv1.3"
    with lab.scenario("dns_bogus"):
        assert dns(lab, "dns_bogus")["answers"] == ["127.0.0.2"]
    assert dns(lab, "dns_bogus")["answers"] == [lab.site("dns_bogus").ip]


def test_a_fault_that_cannot_be_installed_fails_loudly(lab: Lab) -> None:
    """A scenario whose second fault is rejected raises, and its first fault is rolled back."""
    good = faults.syn(lab.site("open").ip, ("DROP",))
    bad = faults.Rule(("-p", "tcp", "--dport", "99999", "-j", "DROP"))
    broken = faults.Scenario("broken", "open", "cannot be installed", (good, bad))
    with pytest.raises(LabError):
        broken.install(lab)
    faults.assert_clean(lab)
    assert http(lab, "open")["status"] == 200


# --------------------------------------------------------------------------- DNS faults


def test_dns_nxdomain(lab: Lab) -> None:
    """dns_nxdomain: the ISP resolver says NXDOMAIN, and getaddrinfo fails."""
    with lab.scenario("dns_nxdomain"):
        assert dns(lab, "dns_nx")["rcode"] == 3
        assert lab.raw("resolve", lab.site("dns_nx").ascii_host)["error"] == "gaierror"


def test_dns_servfail(lab: Lab) -> None:
    """dns_servfail: the ISP resolver answers SERVFAIL."""
    with lab.scenario("dns_servfail"):
        assert dns(lab, "dns_servfail")["rcode"] == 2


def test_dns_bogus_answer(lab: Lab) -> None:
    """dns_bogus: the ISP resolver answers 127.0.0.2, also through getaddrinfo."""
    with lab.scenario("dns_bogus"):
        assert dns(lab, "dns_bogus")["answers"] == ["127.0.0.2"]
        assert lab.raw("resolve", lab.site("dns_bogus").ascii_host)["answers"] == ["127.0.0.2"]


def test_dns_no_answer(lab: Lab) -> None:
    """dns_no_answer: the ISP resolver answers NOERROR with no records; getaddrinfo fails."""
    with lab.scenario("dns_no_answer"):
        got = dns(lab, "dns_empty")
        assert (got["rcode"], got["answers"]) == (0, [])
        assert lab.raw("resolve", lab.site("dns_empty").ascii_host)["error"] == "gaierror"
    assert dns(lab, "dns_empty")["answers"] == [lab.site("dns_empty").ip]


def test_dns_silent(lab: Lab) -> None:
    """dns_silent: the ISP resolver never answers, so the query times out."""
    with lab.scenario("dns_silent"):
        got = dns(lab, "dns_silent", timeout=T)
        assert got["error"] == "TimeoutError" and got["elapsed"] >= T * 0.9


def test_dns_blockpage_redirect(lab: Lab) -> None:
    """dns_blockpage: the name points at the blockpage server, which serves the blockpage."""
    with lab.scenario("dns_blockpage"):
        assert dns(lab, "dns_blockpage")["answers"] == [lab.blockpage_ip]
        got = http(lab, "dns_blockpage")
        assert got["status"] == 200 and "Страница заблокирована" in got["body"]


def test_dns_blockpage_answer_is_known_only_to_the_local_file(lab: Lab) -> None:
    """No bundled DNS fingerprint knows the blockpage address; the lab's local CSV row does."""
    bundled = load_fingerprints()
    local = build_fingerprints(read_ooni_csv(LOCAL_DNS_FINGERPRINTS))
    assert match_dns(bundled, [lab.blockpage_ip]) is None
    found = match_dns(local, [lab.blockpage_ip])
    assert found is not None and found.name == LOCAL_DNS_BLOCKPAGE


def test_dns_proxy_serves_the_real_page(lab: Lab) -> None:
    """dns_proxy: the name points at a transparent proxy that relays the real site."""
    with lab.scenario("dns_proxy"):
        assert dns(lab, "proxied")["answers"] == [lab.proxy_ip]
        title = servers.page_title(lab.site("proxied"))
        assert title in http(lab, "proxied")["body"]
        assert title in http(lab, "proxied", "https")["body"]


# --------------------------------------------------------------------------- TCP/IP faults


def test_syn_reject(lab: Lab) -> None:
    """syn_reject: an RST answers the SYN, so connect fails with ECONNREFUSED."""
    with lab.scenario("syn_reject"):
        assert lab.raw("tcp", lab.site("syn_reject").ip, "443")["errno"] == "ECONNREFUSED"


def test_syn_drop(lab: Lab) -> None:
    """syn_drop: the SYN is dropped, so connect times out."""
    with lab.scenario("syn_drop"):
        got = lab.raw("tcp", lab.site("syn_drop").ip, "443", timeout=T)
        assert got["error"] == "TimeoutError"


def test_addr_rst_resets_every_name(lab: Lab) -> None:
    """addr_rst: TCP connects, then any ClientHello to the address (site or benign SNI) is reset."""
    site = lab.site("addr_rst")
    with lab.scenario("addr_rst"):
        assert lab.raw("tcp", site.ip, "443")["connected"] is True
        assert tls(lab, "addr_rst")["errno"] == "ECONNRESET"
        benign = lab.raw("tls", lab.site("open").ascii_host, "--ip", site.ip,
                         "--cafile", str(lab.ca_file))
        assert benign["errno"] == "ECONNRESET"
    assert tls(lab, "addr_rst")["version"] == "TLSv1.3"


# --------------------------------------------------------------------------- TLS faults


def test_tls_rst_on_sni(lab: Lab) -> None:
    """tls_rst: TCP connects, then the ClientHello's SNI draws an RST (ECONNRESET)."""
    with lab.scenario("tls_rst"):
        assert lab.raw("tcp", lab.site("tls_rst").ip, "443")["connected"] is True
        assert tls(lab, "tls_rst")["errno"] == "ECONNRESET"


def test_tls_rst_spares_other_names(lab: Lab) -> None:
    """tls_rst matches the name, not the address: another SNI to that address still works."""
    site = lab.site("tls_rst")
    with lab.scenario("tls_rst"):
        got = lab.raw("tls", "open.lab.test", "--ip", site.ip, "--cafile", str(lab.ca_file))
        assert got["version"] == "TLSv1.3"


def test_tls_blackhole(lab: Lab) -> None:
    """tls_blackhole: after the SNI the whole flow is dropped, so the handshake times out."""
    with lab.scenario("tls_blackhole"):
        got = tls(lab, "tls_blackhole", timeout=T)
        assert got["error"] == "TimeoutError" and got["elapsed"] >= T * 0.9


def test_tls_fin(lab: Lab) -> None:
    """tls_fin: the relay closes cleanly after the ClientHello: EOF, not a reset."""
    with lab.scenario("tls_fin"):
        got = tls(lab, "tls_fin")
        assert got["error"] == "SSLEOFError" and got["errno"] is None


def test_tls_delay(lab: Lab) -> None:
    """tls_delay: the handshake succeeds but only after the configured hold."""
    with lab.scenario("tls_delay"):
        got = tls(lab, "tls_delay", timeout=faults.DELAY_SECONDS + 3)
        assert got["version"] == "TLSv1.3" and got["elapsed"] >= faults.DELAY_SECONDS
    assert lab.mechanisms["delay"]


def test_tls_mitm(lab: Lab) -> None:
    """tls_mitm: the chain is leaf + 'Security Certificate', unknown to the public CA."""
    with lab.scenario("tls_mitm"):
        got = tls(lab, "tls_mitm")
        assert got["verify_message"] == "unable to get local issuer certificate"
        assert got["issuer_cn"] == "Security Certificate"


# --------------------------------------------------------------------------- HTTP faults


def test_http_rst_on_host(lab: Lab) -> None:
    """http_rst: the request's Host draws an RST (ECONNRESET)."""
    with lab.scenario("http_rst"):
        assert http(lab, "http_rst")["errno"] == "ECONNRESET"


def test_http_blackhole(lab: Lab) -> None:
    """http_blackhole: after the request the flow is dropped, so the read times out."""
    with lab.scenario("http_blackhole"):
        assert http(lab, "http_blackhole", timeout=T)["error"] == "TimeoutError"


def test_http_fin(lab: Lab) -> None:
    """http_fin: the relay closes cleanly after the request: EOF with no response byte."""
    with lab.scenario("http_fin"):
        assert http(lab, "http_fin")["eof"] is True


def test_http_blockpage(lab: Lab) -> None:
    """http_blockpage: a transparent proxy answers the Host with the blockpage."""
    with lab.scenario("http_blockpage"):
        got = http(lab, "http_blockpage")
        assert "Страница заблокирована" in got["body"]
    assert servers.page_title(lab.site("http_blockpage")) in http(lab, "http_blockpage")["body"]


def test_http_diff(lab: Lab) -> None:
    """http_diff: a transparent proxy answers the Host with a 403 notice no fingerprint knows."""
    with lab.scenario("http_diff"):
        got = http(lab, "http_diff")
        assert got["status"] == servers.RESTRICTED_STATUS
        assert servers.RESTRICTED_PHRASE in got["body"]
    assert servers.page_title(lab.site("http_diff")) in http(lab, "http_diff")["body"]


def test_restricted_notice_matches_no_fingerprint() -> None:
    """The http_diff page is not a known blockpage (else kzprobe would say http.blockpage)."""
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"}
    fingerprints = load_fingerprints()
    assert match_http(fingerprints, servers.RESTRICTED_HTML.encode(), headers) is None
    assert match_http(fingerprints, BLOCKPAGE_HTML.encode(), headers) is not None  # control


def test_throttle(lab: Lab) -> None:
    """throttle: over HTTP and HTTPS the body arrives at the capped rate, not at link speed."""
    floor = servers.THROTTLED_SIZE / faults.THROTTLE_RATE * 0.8
    with lab.scenario("throttle"):
        for scheme in ("http", "https"):
            got = http(lab, "throttle", scheme, timeout=10.0)
            assert got["body_len"] == servers.THROTTLED_SIZE and got["elapsed"] >= floor, scheme
    assert http(lab, "throttle", "https")["elapsed"] < floor


def test_control_helper_sees_past_the_censor(lab: Lab) -> None:
    """The control helper (internet namespace) completes the handshake the router resets."""
    if lab.control_url is None:
        pytest.skip(f"no control helper in the lab: {lab.control_missing}")
    endpoint = f"{lab.site('tls_rst').ip}:443"
    th_request = {"http_request": lab.url("tls_rst"), "tcp_connect": [endpoint],
                  "http_request_headers": {}}
    with lab.scenario("tls_rst"):
        assert tls(lab, "tls_rst")["errno"] == "ECONNRESET"
        got = lab.raw("post", lab.control_url, json.dumps(th_request), timeout=10.0)
    assert got["status"] == 200
    assert got["json"]["tls_handshake"][endpoint]["status"] is True
    assert got["json"]["http_request"]["status_code"] == 200


def test_nothing_left_the_lab(lab: Lab) -> None:
    """No namespace's egress guard has rejected a packet addressed outside 198.18.0.0/15."""
    assert lab.egress_rejections() == {ns: 0 for ns in lab.names.all}
