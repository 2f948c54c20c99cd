"""web_connectivity over HTTP/3 on loopback: an aioquic server advertised by the HTTPS test
site's Alt-Svc, a helper answering x_quic_enabled, and hostile QUIC servers."""

from __future__ import annotations

from oonidata.dataclient import load_measurement

from tests.endpoints.censor import udp_relay
from tests.http3.h3server import H3Server, closed_udp_port, silent_udp
from tests.servers import DnsServer, WebSite

URL = "https://site.test:{}/"


async def test_alt_svc_h3_is_fetched_over_quic(measure_web, website: WebSite,
                                               h3: H3Server, helper: str) -> None:
    """Alt-Svc h3 -> a QUIC handshake and an HTTP/3 GET, both recorded; the control did the
    same; no interference, and the record loads with OONI's parser."""
    website.alt_svc = f'h3=":{h3.port}"; ma=60'
    record = await measure_web(URL.format(website.https_port), helper=helper)
    keys = record["test_keys"]
    (shake,) = keys["quic_handshakes"]
    assert shake["network"] == "udp" and shake["failure"] is None
    assert shake["address"] == f"127.0.0.1:{h3.port}"
    assert shake["server_name"] == "site.test" and shake["negotiated_protocol"] == "h3"
    assert shake["peer_certificates"]
    tcp_final, h3_request = keys["requests"][0], keys["requests"][-1]
    assert tcp_final["network"] == "tcp" and tcp_final["response"]["code"] == 200
    assert h3_request["network"] == "udp" and h3_request["alpn"] == "h3"
    assert h3_request["failure"] is None and h3_request["response"]["code"] == 200
    assert "Welcome to the test site" in h3_request["response"]["body"]
    assert h3_request["transaction_id"] == shake["transaction_id"]
    assert h3.hits == 2  # the probe's GET and the helper's
    control = keys["control"]
    assert control["quic_handshake"][f"127.0.0.1:{h3.port}"]["status"] is True
    assert control["http3_request"]["status_code"] == 200
    assert control["http_request"]["discovered_h3_endpoint"] == f"site.test:{h3.port}"
    assert keys["interference"] == [] and keys["accessible"] is True
    parsed = load_measurement(msmt=record)
    assert type(parsed).__name__ == "WebConnectivity"


async def test_no_alt_svc_no_quic(measure_web, website: WebSite, h3: H3Server) -> None:
    """Without an advertisement (and [http3] always off) no QUIC is tried: no new keys."""
    record = await measure_web(URL.format(website.https_port))
    assert "quic_handshakes" not in record["test_keys"]
    assert [r["network"] for r in record["test_keys"]["requests"]] == ["tcp"]
    assert h3.hits == 0


async def test_udp_dropped_while_control_works_is_quic_timeout(
        measure_web, website: WebSite, h3: H3Server, helper: str) -> None:
    """A censor drops the probe's UDP (the helper's passes): quic.timeout, HTTPS still fine."""
    async with udp_relay(h3.port) as relay:
        website.alt_svc = f'h3=":{relay.port}"'
        record = await measure_web(URL.format(website.https_port), helper=helper)
    keys = record["test_keys"]
    assert keys["quic_handshakes"][0]["failure"] == "generic_timeout_error"
    assert relay.dropped > 0
    assert keys["control"]["http3_request"]["failure"] is None
    assert keys["interference"] == ["quic.timeout"]
    assert keys["accessible"] is True and keys["requests"][0]["response"]["code"] == 200


async def test_closed_udp_port_everywhere_is_not_interference(
        measure_web, website: WebSite, helper: str) -> None:
    """The advertised UDP port is closed for everyone: connection_refused (ICMP) recorded,
    the control failed too, so no code."""
    website.alt_svc = f'h3=":{closed_udp_port()}"'
    record = await measure_web(URL.format(website.https_port), helper=helper)
    keys = record["test_keys"]
    assert keys["quic_handshakes"][0]["failure"] == "connection_refused"
    assert [r["network"] for r in keys["requests"]] == ["tcp"]  # no GET without a handshake
    assert keys["control"]["http3_request"]["failure"] is not None
    assert keys["interference"] == [] and keys["accessible"] is True


async def test_always_tries_http3_without_an_advertisement(
        measure_web, website: WebSite) -> None:
    """[http3] always: QUIC to the URL's own port even with no Alt-Svc (nothing listens on
    that UDP port here: refused)."""
    record = await measure_web(URL.format(website.https_port), http3={"always": True})
    (shake,) = record["test_keys"]["quic_handshakes"]
    assert shake["address"] == f"127.0.0.1:{website.https_port}"
    assert shake["failure"] == "connection_refused"
    assert record["test_keys"]["x_h3_endpoint"] is None


async def test_handshake_that_never_finishes_is_bounded(measure_web, website: WebSite) -> None:
    """A UDP port that swallows the Initial packets: a timeout at timeouts.tls, not a hang."""
    transport, silent, port = await silent_udp()
    try:
        website.alt_svc = f'h3=":{port}"'
        record = await measure_web(URL.format(website.https_port), timeouts={"tls": 1.0})
    finally:
        transport.close()
    shake = record["test_keys"]["quic_handshakes"][0]
    assert shake["failure"] == "generic_timeout_error"
    assert silent.received > 0
    assert shake["t"] - shake["t0"] < 10.0  # loose: the bound is 1 s


async def test_endless_body_is_cut_at_the_body_cap(measure_web, website: WebSite,
                                                   h3: H3Server) -> None:
    """An HTTP/3 body that never ends is truncated at [limits] body_bytes."""
    website.alt_svc = f'h3=":{h3.port}"'
    url = f"https://site.test:{website.https_port}/?endless"  # the page over TCP
    record = await measure_web(url, limits={"body_bytes": 65536})
    request = record["test_keys"]["requests"][-1]
    assert request["network"] == "udp" and request["failure"] is None
    assert request["response"]["body_is_truncated"] is True
    assert request["x_body_length"] == 65536


async def test_connection_closed_before_the_response_is_eof(measure_web, website: WebSite,
                                                            h3: H3Server) -> None:
    website.alt_svc = f'h3=":{h3.port}"'
    record = await measure_web(f"https://site.test:{website.https_port}/?close")
    keys = record["test_keys"]
    assert keys["quic_handshakes"][0]["failure"] is None
    assert keys["requests"][-1]["failure"] == "eof_error"


async def test_helper_tries_http3_only_when_asked(website: WebSite, h3: H3Server,
                                                  helper: str, dns_server: DnsServer) -> None:
    """OONI probes send x_quic_enabled false: no HTTP/3 from the helper (http3_request null);
    true: the helper follows the Alt-Svc as the probe does."""
    import aiohttp

    dns_server.zone["site.test"] = ["127.0.0.1"]
    website.alt_svc = f'h3=":{h3.port}"'
    request = {"http_request": URL.format(website.https_port), "tcp_connect": [],
               "http_request_headers": {}}
    async with aiohttp.ClientSession() as session:
        answers = []
        for enabled in (False, True):
            async with session.post(helper, json={**request, "x_quic_enabled": enabled}) as resp:
                answers.append(await resp.json())
    off, on = answers
    assert off["http3_request"] is None and off["quic_handshake"] == {}
    assert on["http3_request"]["status_code"] == 200
    assert on["http3_request"]["title"] == "Welcome to the test site"
    assert h3.hits == 1
