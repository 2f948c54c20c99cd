"""Probe privacy: the probe's public IP never reaches a stored record (certificates excepted).

A site echoes the client's "public" address in headers, a header name, the title, a text
body, a binary body and a redirect; a kzprobe helper measures the same site and reports
what it saw. The address is a documentation address (198.51.100.23) configured as
``[probe] public_ip``; it is only ever a string, never contacted. Loopback is never
treated as a public IP (the helper's ``x_client_ip`` here is 127.0.0.1), so the echo is
of the configured address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from kzprobe.config import Config, load_config
from kzprobe.helper import HelperServer
from kzprobe.service import Daemon, build_engine, measure_urls
from kzprobe.storage.segments import iter_records, list_segments
from kzprobe.targets import parse_target
from tests.hostile.servers import tls_context
from tests.servers import DnsServer, eventually
from tests.service.harness import daemon_config

PUBLIC_IP = "198.51.100.23"
PUBLIC_IP6 = "2001:db8::7"
IP6_SPELLINGS = ("2001:DB8::7", "2001:0db8:0000:0000:0000:0000:0000:0007", "[2001:db8:0::7]:80")


def _echo_app(port_of: Callable[[], int]) -> web.Application:
    """Every page tells the client its (configured) public address."""
    headers = {"X-Your-IP": PUBLIC_IP, f"X-Seen-{PUBLIC_IP}": "1",
               "Set-Cookie": f"ip={PUBLIC_IP}; Path=/"}

    async def text(request: web.Request) -> web.Response:
        return web.Response(text=f"<html><head><title>Your IP is {PUBLIC_IP}</title></head>"
                                 f"<body>You are {PUBLIC_IP}</body></html>",
                            content_type="text/html", headers=headers)

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\xff" + PUBLIC_IP.encode() + b"\x00",
                            content_type="application/octet-stream", headers=headers)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{PUBLIC_IP}.test:{port_of()}/?from={PUBLIC_IP}",
                            headers=headers)

    async def ipv6(request: web.Request) -> web.Response:
        return web.Response(text=" ".join(f"You are {ip}." for ip in IP6_SPELLINGS),
                            headers={"X-Your-IP": IP6_SPELLINGS[0]})

    async def lookalikes(request: web.Request) -> web.Response:
        near = "".join(f"2001:db8::{i:x} ffff:{i:x}::1 " for i in range(30_000))
        return web.Response(text=near[: 500 * 1024] + f" You are {IP6_SPELLINGS[0]}.")

    app = web.Application()
    app.router.add_get("/", text)
    app.router.add_get("/v6", ipv6)
    app.router.add_get("/lookalikes", lookalikes)
    app.router.add_get("/binary", binary)
    app.router.add_get("/redirect", redirect)
    return app


@pytest.fixture
async def echo_site(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """The echoing site on HTTP and HTTPS; its certificate's CN is the public IP too."""
    ports: list[int] = []
    runner = web.AppRunner(_echo_app(lambda: ports[0]), handle_signals=False,
                           shutdown_timeout=1)
    await runner.setup()
    context = tls_context(ca, tmp_path, "echo.test", common_name=PUBLIC_IP)
    for ssl_context in (None, context):
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    yield ports[0], ports[1]
    await runner.cleanup()


@pytest.fixture
async def helper_url(config_factory: Callable[..., Config], dns_server: DnsServer
                     ) -> AsyncIterator[str]:
    """A kzprobe helper on loopback that measures the same site and reports the client."""
    runner = web.AppRunner(
        HelperServer(config_factory(dns=dns_server,
                                    helper={"allow_nets": ["127.0.0.0/8"],
                                            "allowed_ports": ["1-65535"]})).app(),
        handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    await runner.cleanup()


def _strings(value: Any, *, keys: bool) -> list[str]:
    """Every string value in a record (and every key, if asked), base64 blobs decoded."""
    if isinstance(value, dict):
        if value.get("format") == "base64" and isinstance(value.get("data"), str):
            return [base64.b64decode(value["data"]).decode("latin-1")]
        return [s for key, item in value.items()
                for s in [str(key)] * keys + _strings(item, keys=keys)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item, keys=keys)]
    return [value] if isinstance(value, str) else []


def _without_certificates(record: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(orjson.dumps(record))
    for shake in copy["test_keys"]["tls_handshakes"] + copy["test_keys"]["x_sni_checks"]:
        shake.pop("peer_certificates")
    return copy


async def _measure(config_factory: Callable[..., Config], dns_server: DnsServer,
                   helper_url: str, url: str) -> dict[str, Any]:
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    engine = build_engine(config_factory(dns=dns_server, probe={"public_ip": PUBLIC_IP},
                                         control={"helper_url": [helper_url]},
                                         analysis={"retries": 0}))
    try:
        record = await engine.measure(parse_target(url))
    finally:
        await engine.aclose()
    keys = record["test_keys"]
    assert keys["control"] is not None, keys["control_failure"]
    assert keys["requests"][-1]["response"]["code"] in (200, 302)
    return record


@pytest.mark.parametrize("path", ["/", "/binary", "/redirect"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_public_ip_is_scrubbed_everywhere_but_certificates(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        helper_url: str, scheme: str, path: str) -> None:
    """Bodies (text and base64), headers, titles, URLs and the helper's view: no public IP."""
    port = echo_site[0] if scheme == "http" else echo_site[1]
    record = await _measure(config_factory, dns_server, helper_url,
                            f"{scheme}://echo.test:{port}{path}")
    keys = record["test_keys"]
    text = "\n".join(_strings(_without_certificates(record), keys=False))
    assert "[scrubbed]" in text  # the echo was there, and was replaced
    assert PUBLIC_IP not in text
    for shake in keys["tls_handshakes"]:
        leaf = x509.load_der_x509_certificate(base64.b64decode(
            shake["peer_certificates"][0]["data"]))
        common_name = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert common_name == PUBLIC_IP  # certificates are evidence: kept byte for byte


async def test_public_ip_in_a_header_name_is_scrubbed(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        helper_url: str) -> None:
    """A header named after the client's address is scrubbed in `headers` too."""
    record = await _measure(config_factory, dns_server, helper_url,
                            f"http://echo.test:{echo_site[0]}/")
    assert PUBLIC_IP not in "\n".join(_strings(record["test_keys"]["requests"], keys=True))


class NatHelper:
    """A real helper seen through NAT: it reports the probe's public address, not loopback.

    It forwards each THRequest to the real helper and rewrites only ``x_client_ip``, the
    way a helper on the internet sees a probe behind its VPS address; ``failing`` makes it
    answer 503 (a control failure) instead.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing = False

    async def handle(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503)
        async with aiohttp.ClientSession() as session, session.post(
                self.upstream, data=await request.read(),
                headers={"Content-Type": "application/json"}) as resp:
            answer = orjson.loads(await resp.read())
        answer["x_client_ip"] = PUBLIC_IP
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


@pytest.fixture
async def nat_helper(helper_url: str) -> AsyncIterator[tuple[NatHelper, str]]:
    nat = NatHelper(helper_url)
    app = web.Application()
    app.router.add_post("/", nat.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield nat, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_failed_control_is_scrubbed_with_the_address_a_helper_reported_earlier(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        nat_helper: tuple[NatHelper, str]) -> None:
    """No public_ip configured: the helper's answers teach the address for later records."""
    nat, url = nat_helper
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    engine = build_engine(config_factory(dns=dns_server, control={"helper_url": [url]},
                                         analysis={"retries": 0}))
    try:
        first = await engine.measure(parse_target(f"http://echo.test:{echo_site[0]}/"))
        nat.failing = True
        second = await engine.measure(parse_target(f"http://echo.test:{echo_site[0]}/binary"))
    finally:
        await engine.aclose()
    assert first["test_keys"]["control"]["x_client_ip"] == "[scrubbed]"
    assert second["test_keys"]["control"] is None and second["test_keys"]["control_failure"]
    for record in (first, second):
        text = "\n".join(_strings(record, keys=True))
        assert "[scrubbed]" in text and PUBLIC_IP not in text


async def test_dropped_body_hash_is_of_the_scrubbed_body(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        helper_url: str) -> None:
    """A hash of the raw page would give the address away to a brute force over a prefix."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    engine = build_engine(config_factory(
        dns=dns_server, probe={"public_ip": PUBLIC_IP}, control={"helper_url": [helper_url]},
        output={"store_bodies": "never"}, analysis={"retries": 0}))
    try:
        record = await engine.measure(parse_target(f"http://echo.test:{echo_site[0]}/"))
    finally:
        await engine.aclose()
    response = record["test_keys"]["requests"][0]["response"]
    scrubbed = (b"<html><head><title>Your IP is [scrubbed]</title></head>"
                b"<body>You are [scrubbed]</body></html>")
    assert response["body"] == ""
    assert response["x_body_sha256"] == hashlib.sha256(scrubbed).hexdigest()
    assert response["x_body_length"] == len(scrubbed)


async def test_every_spelling_of_an_ipv6_public_address_is_scrubbed(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        helper_url: str) -> None:
    """A dual-stack VPS: public_ip lists both; upper case and expanded IPv6 forms go too."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    engine = build_engine(config_factory(
        dns=dns_server, probe={"public_ip": [PUBLIC_IP, PUBLIC_IP6]},
        control={"helper_url": [helper_url]}, analysis={"retries": 0}))
    try:
        record = await engine.measure(parse_target(f"http://echo.test:{echo_site[0]}/v6"))
    finally:
        await engine.aclose()
    text = "\n".join(_strings(record, keys=True))
    assert text.count("[scrubbed]") >= len(IP6_SPELLINGS)
    assert "2001" not in text


async def test_a_page_of_address_lookalikes_is_scrubbed_in_bounded_time(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        helper_url: str) -> None:
    """500 KiB of near misses of the probe's IPv6 address: the scrub (on the measuring loop)
    stays short, and the real address is gone."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    engine = build_engine(config_factory(
        dns=dns_server, probe={"public_ip": [PUBLIC_IP, PUBLIC_IP6]},
        control={"helper_url": [helper_url]}, analysis={"retries": 0}))
    original = engine.pipeline.scrubber.scrub
    spent: list[float] = []

    def timed(record: dict[str, Any]) -> dict[str, Any]:
        started = time.process_time()
        try:
            return original(record)
        finally:
            spent.append(time.process_time() - started)

    engine.pipeline.scrubber.scrub = timed  # type: ignore[method-assign]
    try:
        record = await engine.measure(parse_target(f"http://echo.test:{echo_site[0]}/lookalikes"))
    finally:
        await engine.aclose()
    body = record["test_keys"]["requests"][0]["response"]["body"]
    assert len(body) > 400 * 1024 and body.endswith("You are [scrubbed].")
    # CPU seconds of the one scrub. The bound is loose (0.15 failed once on a loaded CI
    # machine at 0.16): the fine check is the same-run ratio in tests/verdict/test_verdict.py;
    # this one catches a scrub that no longer scales with the page at all.
    assert spent and spent[0] < 1.0


async def test_measure_warns_when_no_public_address_is_known(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int]
        ) -> None:
    """Without public_ip, records before the first helper answer cannot be scrubbed: say so."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    out = io.StringIO()
    with structlog.testing.capture_logs() as logs:
        await measure_urls(config_factory(dns=dns_server, analysis={"retries": 0}),
                           [f"http://echo.test:{echo_site[0]}/"], out=out)
    assert [e for e in logs if e["event"] == "public_ip_unknown"]
    assert orjson.loads(out.getvalue())["input"].startswith("http://echo.test")
    with structlog.testing.capture_logs() as logs:
        await measure_urls(config_factory(dns=dns_server, probe={"public_ip": PUBLIC_IP},
                                          analysis={"retries": 0}),
                           [f"http://echo.test:{echo_site[0]}/"], out=io.StringIO())
    assert not [e for e in logs if e["event"] == "public_ip_unknown"]


async def test_daemon_names_segments_and_records_by_a_stored_probe_id_not_the_host(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        tmp_path: Path) -> None:
    """Without [probe] id: a random id stored in the output dir names files and records,
    the same after a restart; the daemon warns that no public address is configured."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    config = config_factory(dns=dns_server, tmp=tmp_path, analysis={"retries": 0},
                            service={"metrics_listen": ""})
    target = parse_target(f"http://echo.test:{echo_site[0]}/")
    ids = []
    for _ in range(2):
        with structlog.testing.capture_logs() as logs:
            assert await Daemon(config, [target]).serve(once=True) == 0
        assert [e for e in logs if e["event"] == "public_ip_unknown"]
        ids.append((tmp_path / "out" / ".probe-id").read_text().strip())
    names = [p.name for p in list_segments([tmp_path / "out"])]
    records = list(iter_records([tmp_path / "out"]))
    assert ids[0] == ids[1] and len(names) == len(records) == 2
    assert all(f"-{ids[0]}-" in name and socket.gethostname() not in name for name in names)
    assert [r["annotations"]["kzprobe_probe_id"] for r in records] == ids


async def test_configured_probe_id_is_in_the_record(
        config_factory: Callable[..., Config], dns_server: DnsServer, echo_site: tuple[int, int],
        ) -> None:
    """`kzprobe measure` has no output dir: the record carries [probe] id when one is set."""
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    out = io.StringIO()
    await measure_urls(config_factory(dns=dns_server, probe={"id": "kz-test"},
                                      analysis={"retries": 0}),
                       [f"http://echo.test:{echo_site[0]}/"], out=out)
    assert orjson.loads(out.getvalue())["annotations"]["kzprobe_probe_id"] == "kz-test"


async def test_addresses_learned_before_a_reload_still_scrub_after_it(
        ca_file: Path, dns_server: DnsServer, echo_site: tuple[int, int],
        nat_helper: tuple[NatHelper, str], tmp_path: Path) -> None:
    """SIGHUP builds a new engine; what the old one learned from helpers carries over, so a
    record whose control fails right after a reload is still scrubbed."""
    nat, helper = nat_helper
    dns_server.zone["echo.test"] = ["127.0.0.1"]
    url = f"http://echo.test:{echo_site[0]}/"
    path = daemon_config(tmp_path / "c.toml", urls=[url], out=tmp_path / "out",
                         dns={"resolvers": [dns_server.address], "query_aaaa": False},
                         tls={"ca_file": str(ca_file)}, control={"helper_url": [helper]},
                         schedule={"interval": 0.2, "jitter": 0})
    records: list[dict[str, Any]] = []

    async def collect(record: dict[str, Any]) -> None:
        records.append(record)

    daemon = Daemon(load_config(path).config, [parse_target(url)], on_record=collect)
    task = asyncio.create_task(daemon.serve(once=False))
    try:
        await eventually(lambda: len(records) >= 1, timeout=20)
        nat.failing = True
        first_engine = daemon.running.engine
        daemon.request_reload()
        await eventually(lambda: daemon.running.engine is not None
                         and daemon.running.engine is not first_engine, timeout=20)
        applied_at = len(records)
        await eventually(lambda: len(records) >= applied_at + 2, timeout=20)
    finally:
        daemon.request_stop()
        await task
    after = records[applied_at + 1]
    assert after["test_keys"]["control"] is None  # measured by the new engine, helper failing
    text = "\n".join(_strings(after, keys=True))
    assert "[scrubbed]" in text and PUBLIC_IP not in text
