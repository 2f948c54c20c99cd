"""Probe privacy: the probe's public IP never reaches a stored record (certificates excepted).

A site echoes the client's "public" address in headers, a header name, the title, a text
body, a binary body and a redirect; a kzprobe helper measures the same site and reports
what it saw. The address is a documentation address (198.51.100.23) configured as
``[probe] public_ip``; it is only ever a string, never contacted. Loopback is never
treated as a public IP (the helper's ``x_client_ip`` here is 127.0.0.1), so the echo is
of the configured address.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from kzprobe.config import Config
from kzprobe.engine import Prober
from kzprobe.helper import HelperServer
from kzprobe.targets import parse_target
from tests.hostile.servers import tls_context
from tests.servers import DnsServer

PUBLIC_IP = "198.51.100.23"


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

    app = web.Application()
    app.router.add_get("/", text)
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
    prober = Prober(config_factory(dns=dns_server, probe={"public_ip": PUBLIC_IP},
                                   control={"helper_url": [helper_url]},
                                   analysis={"retries": 0}))
    try:
        record = await prober.measure(parse_target(url))
    finally:
        await prober.aclose()
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
