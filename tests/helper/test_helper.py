"""`kzprobe helper` (OONI's test-helper protocol) and the probe's control client, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from dnslib import DNSRecord

from kzprobe.config import Config
from kzprobe.engine import build_engine
from kzprobe.helper import RunningHelper, start_helper
from kzprobe.targets import parse_target
from tests.servers import DnsServer, WebSite, refused_port

# These tests dial loopback servers on ephemeral ports, so the port allow-list is opened
# explicitly; it has tests of its own in test_helper_hardening.py.
ANY_PORT = frozenset(range(1, 65536))


async def _start_helper(config: Config) -> tuple[RunningHelper, str]:
    """The helper as `kzprobe helper` serves it (slow-client bounds included), port 0."""
    return await start_helper(replace(config, helper=replace(
        config.helper, listen="127.0.0.1:0", allowed_ports=ANY_PORT)))


@pytest.fixture
async def helper_factory(config_factory: Callable[..., Config], dns_server: DnsServer
                         ) -> AsyncIterator[Callable[..., Any]]:
    runners: list[RunningHelper] = []

    async def start(**helper: object) -> str:
        config = config_factory(dns=dns_server, helper=helper)
        runner, url = await _start_helper(config)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


async def _post(url: str, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload,
                                                                **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_hello(helper_factory) -> None:
    """GET / answers OONI's hello JSON."""
    url = await helper_factory(allow_nets=["127.0.0.0/8"])
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert (await resp.json())["message"] == "Hello OONItarian!"


async def test_th_response_for_a_working_site(helper_factory, dns_server: DnsServer,
                                              website: WebSite) -> None:
    """A THRequest gets OONI's THResponse: dns, tcp_connect, tls_handshake, http, ip_info."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    url = await helper_factory(allow_nets=["127.0.0.0/8"])
    site = f"https://site.test:{website.https_port}/"
    endpoint = f"127.0.0.1:{website.https_port}"
    status, th = await _post(url, {"http_request": site, "tcp_connect": [endpoint],
                                   "http_request_headers": {}})
    assert status == 200
    assert th["dns"] == {"failure": None, "addrs": ["127.0.0.1"]}
    assert th["tcp_connect"][endpoint] == {"status": True, "failure": None}
    assert th["tls_handshake"][endpoint] == {"server_name": "site.test", "status": True,
                                             "failure": None}
    http = th["http_request"]
    assert http["status_code"] == 200 and http["failure"] is None
    assert http["title"] == "Welcome to the test site"
    assert http["body_length"] > 0
    assert th["ip_info"]["127.0.0.1"]["flags"] & 8
    assert th["x_client_ip"] == "127.0.0.1"


async def test_th_dns_failure_mapping(helper_factory, dns_server: DnsServer) -> None:
    """NXDOMAIN at the helper is OONI's dns_name_error, with no addresses."""
    dns_server.faults["gone.test"] = "nxdomain"
    url = await helper_factory(allow_nets=["127.0.0.0/8"])
    _, th = await _post(url, {"http_request": "https://gone.test/", "tcp_connect": []})
    assert th["dns"] == {"failure": "dns_name_error", "addrs": []}
    assert th["http_request"]["failure"] == "dns_lookup_error"
    assert th["http_request"]["status_code"] == -1


@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1",
                                      "[::ffff:127.0.0.1]", "[::1]"])
async def test_ssrf_special_purpose_addresses_are_refused_by_default(
        helper_factory, website: WebSite, spelling: str) -> None:
    """Loopback in any spelling is never dialled unless allow_nets lists it."""
    url = await helper_factory()
    before = website.hits
    site = f"http://{spelling}:{website.http_port}/"
    status, th = await _post(url, {"http_request": site,
                                   "tcp_connect": [f"127.0.0.1:{website.http_port}"]})
    assert status == 200
    assert th["tcp_connect"] == {}
    assert th["http_request"]["status_code"] == -1
    assert website.hits == before


async def test_ssrf_name_resolving_to_private_address_is_refused(
        helper_factory, dns_server: DnsServer, website: WebSite) -> None:
    """A public-looking name that resolves to a private address is not dialled."""
    dns_server.zone["innocent.test"] = ["127.0.0.1"]
    url = await helper_factory()
    _, th = await _post(url, {"http_request": f"http://innocent.test:{website.http_port}/",
                              "tcp_connect": []})
    assert th["tcp_connect"] == {}
    assert th["http_request"]["failure"] == "dns_lookup_error"
    assert website.hits == 0


async def test_ports_outside_the_protocol_are_not_scanned(helper_factory, dns_server: DnsServer,
                                                          website: WebSite) -> None:
    """Endpoints on ports other than the URL's (or 80/443) are ignored."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    url = await helper_factory(allow_nets=["127.0.0.0/8"])
    _, th = await _post(url, {"http_request": f"http://site.test:{website.http_port}/",
                              "tcp_connect": ["127.0.0.1:22", "127.0.0.1:6379"]})
    assert set(th["tcp_connect"]) == {f"127.0.0.1:{website.http_port}"}


async def test_token_is_required_when_set(helper_factory) -> None:
    """With [helper] token set, a request without the bearer token gets 401."""
    url = await helper_factory(token="s3cret", allow_nets=["127.0.0.0/8"])
    status, _ = await _post(url, {"http_request": "http://a.test/"})
    assert status == 401
    status, _ = await _post(url, {"http_request": "http://a.test/"},
                            headers={"Authorization": "Bearer wrong"})
    assert status == 401


async def test_oversized_and_malformed_requests(helper_factory) -> None:
    """Bodies over max_body_bytes get 413; bad JSON or a bad URL gets 400."""
    url = await helper_factory(max_body_bytes=2048)
    status, _ = await _post(url, {"http_request": "http://a.test/" + "x" * 5000})
    assert status == 413
    async with aiohttp.ClientSession() as session, session.post(url, data=b"{nope") as resp:
        assert resp.status == 400
    status, _ = await _post(url, {"http_request": "ftp://a.test/"})
    assert status == 400


async def test_in_flight_limit_answers_503(helper_factory, dns_server: DnsServer,
                                           website: WebSite) -> None:
    """Above max_in_flight concurrent requests the helper answers 503, like oohelperd."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    url = await helper_factory(max_in_flight=1, allow_nets=["127.0.0.0/8"])
    slow = {"http_request": f"http://site.test:{website.http_port}/slow?s=1"}
    statuses = await asyncio.gather(_post(url, slow), _post(url, slow))
    assert sorted(s for s, _ in statuses) == [200, 503]


async def test_per_client_rate_limit_answers_429(helper_factory) -> None:
    """A client over its request rate gets 429."""
    url = await helper_factory(rate_per_client=0.01, rate_burst=2)
    statuses = [(await _post(url, {"http_request": "ftp://x/"}))[0] for _ in range(4)]
    assert statuses[:2] == [400, 400]
    assert statuses[2:] == [429, 429]


async def test_probe_uses_control_with_failover(config_factory: Callable[..., Config],
                                                dns_server: DnsServer, website: WebSite,
                                                helper_factory) -> None:
    """The probe asks its helpers in order; a dead first helper fails over to the second."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    good = await helper_factory(allow_nets=["127.0.0.0/8"])
    dead = f"http://127.0.0.1:{refused_port()}/"
    engine = build_engine(config_factory(dns=dns_server, control={"helper_url": [dead, good]}))
    try:
        record = await engine.measure(parse_target(f"https://site.test:{website.https_port}/"))
    finally:
        await engine.aclose()
    keys = record["test_keys"]
    assert keys["control_failure"] is None
    assert keys["x_control_helper"] == good
    assert keys["control"]["http_request"]["status_code"] == 200
    assert record["test_helpers"]["backend"]["address"] == dead


async def test_control_failure_never_blocks_the_measurement(
        config_factory: Callable[..., Config], dns_server: DnsServer, website: WebSite) -> None:
    """All helpers down: control_failure is recorded, the probe's own steps are complete."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    dead = f"http://127.0.0.1:{refused_port()}/"
    engine = build_engine(config_factory(dns=dns_server, control={"helper_url": [dead]}))
    try:
        record = await engine.measure(parse_target(f"https://site.test:{website.https_port}/"))
    finally:
        await engine.aclose()
    keys = record["test_keys"]
    assert keys["control"] is None
    assert keys["control_failure"] == "connection_refused"
    assert keys["requests"][0]["response"]["code"] == 200


async def test_helper_command_serves_and_stops_on_sigterm(tmp_path) -> None:
    """`kzprobe helper` listens on [helper] listen, answers GET /, exits 0 on SIGTERM."""
    import signal
    import sys

    port = refused_port()
    config = tmp_path / "helper.toml"
    config.write_text(f'[helper]\nlisten = "127.0.0.1:{port}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kzprobe", "helper", "--config", str(config),
        stderr=asyncio.subprocess.PIPE)
    hello: dict[str, Any] = {}

    async def answered() -> bool:
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/") as resp:
                hello.update(await resp.json())
                return True
        except aiohttp.ClientError:
            return False

    async with asyncio.timeout(20):
        while not await answered():  # noqa: ASYNC110 - the server is another process
            await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    assert hello["message"] == "Hello OONItarian!"


async def test_dns_rebinding_cannot_reach_a_refused_address(
        config_factory: Callable[..., Config], website: WebSite) -> None:
    """A name that answers an allowed address first and a refused one next is never dialled
    at the refused one: every lookup's addresses pass the policy before any connect."""
    def rebinding(request: DNSRecord, proto: str) -> DNSRecord | None:
        dns.zone["rebind.test"] = ["127.0.0.1"] if len(dns.queries) % 2 else ["127.0.0.9"]
        return dns.answer(request, "rebind.test")

    dns = DnsServer(handlers={"rebind.test": rebinding})
    await dns.start()
    try:
        runner, url = await _start_helper(config_factory(
            dns=dns, helper={"allow_nets": ["127.0.0.1/32"]}))
        try:
            for _ in range(3):
                _, th = await _post(url, {"http_request":
                                          f"http://rebind.test:{website.http_port}/"})
                dialled = {key.rsplit(":", 1)[0] for key in th["tcp_connect"]}
                assert dialled <= {"127.0.0.1"}
        finally:
            await runner.cleanup()
    finally:
        dns.close()


async def test_redirect_into_a_refused_range_is_not_followed(
        config_factory: Callable[..., Config], dns_server: DnsServer) -> None:
    """An allowed site redirecting to a refused address: the helper stops, the target sees
    nothing, and the private page is not echoed."""
    secret_hits = 0

    async def secret(request: web.Request) -> web.Response:
        nonlocal secret_hits
        secret_hits += 1
        return web.Response(text="internal secret")

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.3:{ports['secret']}/")

    ports: dict[str, int] = {}
    runners = []
    for name, host, handler in (("secret", "127.0.0.3", secret), ("hop", "127.0.0.2", hop)):
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runners.append(runner)
    helper, url = await _start_helper(config_factory(
        dns=dns_server, helper={"allow_nets": ["127.0.0.2/32"]}))
    try:
        _, th = await _post(url, {"http_request": f"http://127.0.0.2:{ports['hop']}/"})
    finally:
        await helper.cleanup()
        for runner in runners:
            await runner.cleanup()
    assert th["http_request"]["status_code"] == -1
    assert th["http_request"]["failure"] == "dns_lookup_error"
    assert secret_hits == 0
    assert "secret" not in str(th)


async def test_slow_clients_are_cut_off(config_factory: Callable[..., Config]) -> None:
    """Slowloris: a request trickled a byte at a time is closed after client_timeout, and
    connections beyond max_connections are closed on accept; real clients still get in."""
    helper, url = await _start_helper(config_factory(
        helper={"client_timeout": 1.0, "max_connections": 4}))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        closed_after = None
        for byte in b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n":
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.1)
            if reader.at_eof() or writer.transport.is_closing():
                break
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (ConnectionError, TimeoutError):
            pass
        closed_after = asyncio.get_running_loop().time() - started
        writer.close()
        assert closed_after < 4.0
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(extra_reader.read(), 2) == b""  # closed at once
        extra_writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
    finally:
        await helper.cleanup()


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1",
    "224.0.0.251", "0.0.0.0", "255.255.255.255", "::1", "fc00::1", "fd12:3456::1", "fe80::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "167772161", "0x0a.0.0.1", "012.0.0.1", "10.1",
])
def test_dial_policy_refuses_special_purpose_addresses(address: str) -> None:
    """Private, loopback, link-local (cloud metadata), CGNAT, multicast, ULA, mapped and
    odd-spelled addresses are refused by default; allow_nets lifts exactly its range."""
    import ipaddress

    from kzprobe.helper import DialPolicy

    assert DialPolicy(())(address) is False
    everything = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert DialPolicy(everything)(address) is True


def test_dial_policy_allows_public_addresses() -> None:
    """Public addresses are dialled (checked as strings only: nothing is contacted)."""
    from kzprobe.helper import DialPolicy

    assert DialPolicy(())("93.184.216.34") is True
    assert DialPolicy(())("2606:2800:220:1:248:1893:25c8:1946") is True


@pytest.mark.parametrize(("body", "title"), [
    ("<html><title>Welcome</title></html>", "Welcome"),
    ("<HTML><TITLE> Доступ ограничен </TITLE></HTML>", " Доступ ограничен "),  # as written
    ('<title lang="kk">With attributes</title>', ""),  # OONI's parser takes no attributes
    ({"format": "base64", "data": "PHRpdGxlPkJsb2NrZWQ8L3RpdGxlPv8="}, "Blocked"),  # not UTF-8
])
def test_th_title_is_the_one_the_analysis_compares(body: object, title: str) -> None:
    """THResponse ``title`` comes from the parser the probe's title_match uses (OONI's
    WebGetTitle), so the two sides of the comparison cannot differ by parser (the helper's
    own parser took attributes, stripped spaces and skipped base64 bodies)."""
    from kzprobe.helper.th import _http_summary
    from kzprobe.verdict.analysis.observations import web_title
    from kzprobe.verdict.analysis.records import body_bytes

    keys = {"requests": [{"response": {"code": 200, "body": body, "headers": {}}}],
            "http_experiment_failure": None}
    assert _http_summary(keys)["title"] == title == web_title(body_bytes(body))
