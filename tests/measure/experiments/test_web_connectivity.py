"""The web_connectivity experiment end to end on loopback: DNS -> TCP -> TLS -> GET."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from oonidata.dataclient import load_measurement

from kzprobe.config import Config
from kzprobe.engine import Engine, build_engine
from kzprobe.targets import parse_target
from tests.servers import DnsServer, WebSite, refused_port, reset_socket


@pytest.fixture
async def measure(config_factory: Callable[..., Config],
                  dns_server: DnsServer) -> AsyncIterator[Callable[..., Any]]:
    engines: list[Engine] = []

    async def run(url: str, **sections: dict[str, object]) -> dict[str, Any]:
        engine = build_engine(config_factory(dns=dns_server, **sections))
        engines.append(engine)
        return await engine.measure(parse_target(url))

    yield run
    for engine in engines:
        await engine.aclose()


async def test_https_site_is_fetched_on_the_measured_connection(
        measure, dns_server: DnsServer, website: WebSite) -> None:
    """One connection per HTTPS URL: the GET rides the TLS connection that was measured."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"https://site.test:{website.https_port}/")
    keys = record["test_keys"]
    assert [q["failure"] for q in keys["queries"]] == [None]
    assert len(keys["tcp_connect"]) == 1
    assert keys["tls_handshakes"][0]["failure"] is None
    assert keys["tls_handshakes"][0]["server_name"] == "site.test"
    final = keys["requests"][0]
    assert final["failure"] is None
    assert final["response"]["code"] == 200
    assert "Welcome to the test site" in final["response"]["body"]
    assert final["transaction_id"] == keys["tls_handshakes"][0]["transaction_id"]
    assert keys["http_experiment_failure"] is None
    assert len(dns_server.queries) == 1  # no hidden second lookup by the HTTP client
    assert website.hits == 1


async def test_record_loads_with_oonis_parser(measure, dns_server: DnsServer,
                                              website: WebSite) -> None:
    """oonidata reads kzprobe's record as a WebConnectivity measurement."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"https://site.test:{website.https_port}/")
    parsed = load_measurement(msmt=record)
    assert type(parsed).__name__ == "WebConnectivity"
    assert parsed.test_keys.requests[0].response.code == 200
    assert record["measurement_start_time"].count(":") == 2


async def test_redirects_are_followed_and_recorded_newest_first(
        measure, dns_server: DnsServer, website: WebSite) -> None:
    """Each hop is its own measured request; requests[0] is the final one."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"http://site.test:{website.http_port}/redirect/3")
    requests = record["test_keys"]["requests"]
    assert [r["response"]["code"] for r in requests] == [200, 302, 302, 302]
    assert requests[0]["request"]["url"].endswith(f":{website.http_port}/")
    assert len(record["test_keys"]["tcp_connect"]) == 4


async def test_redirect_loop_stops_at_the_limit(measure, dns_server: DnsServer,
                                                website: WebSite) -> None:
    """A redirect loop ends after limits.max_redirects hops with a failure, not a hang."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"http://site.test:{website.http_port}/loop",
                           limits={"max_redirects": 3})
    keys = record["test_keys"]
    assert len(keys["requests"]) == 4
    assert keys["http_experiment_failure"] == "unknown_failure: stopped after 3 redirects"


async def test_body_snapshot_is_capped(measure, dns_server: DnsServer, website: WebSite) -> None:
    """A body over limits.body_bytes is cut and marked truncated."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"http://site.test:{website.http_port}/big",
                           limits={"body_bytes": 4096})
    response = record["test_keys"]["requests"][0]["response"]
    assert len(response["body"]) == 4096
    assert response["body_is_truncated"] is True


async def test_binary_body_is_base64(measure, dns_server: DnsServer, website: WebSite) -> None:
    """Bodies that are not UTF-8 are stored as OONI base64 objects."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    record = await measure(f"http://site.test:{website.http_port}/binary")
    body = record["test_keys"]["requests"][0]["response"]["body"]
    assert body["format"] == "base64"


async def test_idna_host_goes_out_as_punycode(measure, dns_server: DnsServer,
                                              website: WebSite) -> None:
    """A Unicode host is resolved and sent as SNI in punycode."""
    dns_server.zone["xn--e1afmkfd.test"] = ["127.0.0.1"]
    record = await measure(f"https://пример.test:{website.https_port}/")
    keys = record["test_keys"]
    assert keys["queries"][0]["hostname"] == "xn--e1afmkfd.test"
    assert keys["tls_handshakes"][0]["server_name"] == "xn--e1afmkfd.test"
    assert keys["requests"][0]["response"]["code"] == 200


async def test_nxdomain_sets_dns_experiment_failure(measure, dns_server: DnsServer) -> None:
    """No address: no connection attempted, DNS failure recorded at both levels."""
    dns_server.faults["gone.test"] = "nxdomain"
    record = await measure("https://gone.test/")
    keys = record["test_keys"]
    assert keys["dns_experiment_failure"] == "dns_nxdomain_error"
    assert keys["tcp_connect"] == []
    assert keys["requests"] == []


async def test_refused_everywhere_is_recorded(measure, dns_server: DnsServer) -> None:
    """A refused connect leaves http_experiment_failure = connection_refused."""
    dns_server.zone["down.test"] = ["127.0.0.1"]
    record = await measure(f"http://down.test:{refused_port()}/")
    keys = record["test_keys"]
    assert keys["tcp_connect"][0]["status"]["failure"] == "connection_refused"
    assert keys["http_experiment_failure"] == "connection_refused"


async def test_reset_during_response_is_http_failure(measure, dns_server: DnsServer,
                                                     raw_server) -> None:
    """A reset after the request was sent is recorded on the request itself."""

    async def reset_on_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        reset_socket(writer)

    server = await raw_server(reset_on_request)
    dns_server.zone["rst.test"] = ["127.0.0.1"]
    record = await measure(f"http://rst.test:{server.port}/")
    request = record["test_keys"]["requests"][0]
    assert request["failure"] == "connection_reset"
    assert record["test_keys"]["http_experiment_failure"] == request["failure"]


async def test_trickling_body_ends_at_the_http_deadline(measure, dns_server: DnsServer,
                                                        raw_server) -> None:
    """One byte a second cannot hold a measurement past timeouts.http."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.2)

    server = await raw_server(trickle)
    dns_server.zone["slow.test"] = ["127.0.0.1"]
    record = await measure(f"http://slow.test:{server.port}/", timeouts={"http": 1.0})
    assert record["test_keys"]["requests"][0]["failure"] == "generic_timeout_error"
    assert record["test_runtime"] < 5


async def test_bodies_of_fine_pages_are_hashed_not_stored(measure, dns_server: DnsServer,
                                                         website: WebSite) -> None:
    """store_bodies=anomalous keeps length and SHA-256 of a plainly fine page, not the body."""
    import hashlib

    dns_server.zone["site.test"] = ["127.0.0.1"]
    url = f"https://site.test:{website.https_port}/"  # OONI: fine HTTPS is fine without control
    kept = (await measure(url))["test_keys"]["requests"][0]["response"]
    dropped = (await measure(url, output={"store_bodies": "anomalous"}))["test_keys"]
    response = dropped["requests"][0]["response"]
    assert dropped["blocking"] is False and dropped["interference"] == []
    assert response["body"] == ""
    assert response["x_body_sha256"] == hashlib.sha256(kept["body"].encode()).hexdigest()
    assert response["x_body_length"] == len(kept["body"])


async def test_body_throttled_by_sni_is_throttling(measure, dns_server: DnsServer,
                                                   website: WebSite) -> None:
    """A body slowed for the target SNI only: a benign-SNI check runs and shows throttling."""
    from kzprobe.simnet.common import NameRules
    from kzprobe.simnet.sni_filter import Action, SniFilter

    rules = NameRules(Action("pass"), {"site.test": Action.parse("rate:32768")})
    async with SniFilter(("127.0.0.1", 0), ("127.0.0.1", website.https_port),
                         rules=rules) as box:
        dns_server.zone["site.test"] = ["127.0.0.1"]
        record = await measure(f"https://site.test:{box.address[1]}/big",
                               limits={"body_bytes": 96 * 1024}, timeouts={"http": 8},
                               analysis={"throttle_min_seconds": 1.0, "retries": 0})
    keys = record["test_keys"]
    assert keys["requests"][0]["x_body_seconds"] > 1.0
    assert [c["server_name"] for c in keys["x_sni_checks"]] == ["example.com"]
    assert keys["x_sni_checks"][0]["failure"] is None
    assert keys["interference"] == ["throttling"]


async def test_server_choosing_h2_is_fetched_over_a_fresh_http11_connection(
        measure, dns_server: DnsServer, ca) -> None:
    """The measured handshake offers h2: a server that picks it gets a second, http/1.1-only
    connection for the GET (aiohttp speaks HTTP/1.1); both handshakes are recorded."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("h2.test").configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2":
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    dns_server.zone["h2.test"] = ["127.0.0.1"]
    try:
        record = await measure(f"https://h2.test:{port}/")
    finally:
        server.close()
    keys = record["test_keys"]
    assert [h["negotiated_protocol"] for h in keys["tls_handshakes"]] == ["h2", "http/1.1"]
    assert "alpn=http/1.1" in keys["tls_handshakes"][1]["tags"]
    assert keys["requests"][0]["response"]["code"] == 200
    assert keys["requests"][0]["transaction_id"] == keys["tls_handshakes"][1]["transaction_id"]
