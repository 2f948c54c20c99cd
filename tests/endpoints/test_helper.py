"""The kzprobe helper's endpoint extension: an endpoint URI as http_request gets x_endpoint."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.endpoints.daemons import TorRelay
from tests.servers import WebSite


async def _post(url: str, payload: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_tcp_endpoint_gets_tcp_connect_and_x_endpoint(helper_url: str,
                                                           website: WebSite) -> None:
    """A tcp:// request: OONI's tcp_connect for the address, x_endpoint, and no HTTP fetch."""
    address = f"127.0.0.1:{website.http_port}"
    status, body = await _post(helper_url, {"http_request": f"tcp://{address}",
                                            "tcp_connect": [address]})
    assert status == 200
    assert body["tcp_connect"][address] == {"status": True, "failure": None}
    assert body["x_endpoint"] == {"test_name": "tcpconnect", "reachable": True,
                                  "failure": None, "failed_operation": None}
    assert body["http_request"] is None
    assert website.hits == 0  # no HTTP request reached the site


async def test_tor_endpoint_is_measured_from_outside(helper_url: str,
                                                     tor_relay: TorRelay) -> None:
    """The helper runs the same link-protocol check as the probe."""
    uri = f"tor://127.0.0.1:{tor_relay.port}?fingerprint={tor_relay.fingerprint}"
    status, body = await _post(helper_url, {"http_request": uri, "tcp_connect": []})
    assert status == 200 and body["x_endpoint"]["reachable"] is True
    assert body["x_endpoint"]["test_name"] == "tor"


async def test_key_file_parameters_are_refused(helper_url: str) -> None:
    """A client may not make the helper read a local file: 400."""
    key = "A" * 43 + "="
    status, body = await _post(helper_url, {
        "http_request": f"wireguard://127.0.0.1:9?public_key={key}&private_key_file=/etc/shadow",
        "tcp_connect": []})
    assert status == 400 and "files" in body["error"]


async def test_udp_endpoints_get_no_tcp_connect(helper_url: str) -> None:
    """For a UDP endpoint the helper dials nothing over TCP, even if asked to."""
    status, body = await _post(helper_url, {"http_request": "stun://127.0.0.1:9",
                                            "tcp_connect": ["127.0.0.1:9"]})
    assert status == 200 and body["tcp_connect"] == {}
    assert body["x_endpoint"]["reachable"] is False
