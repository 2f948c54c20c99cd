"""The helper's access log: by default one JSON line per request, the client as its /24."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.helper.test_helper_hardening import _run_helper_briefly
from tests.servers import refused_port


async def test_every_request_is_one_access_line_without_the_client_address(
        tmp_path: Path) -> None:
    port = refused_port()
    config = tmp_path / "helper.toml"
    config.write_text(f'[helper]\nlisten = "127.0.0.1:{port}"\nmax_body_bytes = 1024\n')
    url = f"http://127.0.0.1:{port}/"

    async def requests() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
            async with session.post(url, json={"http_request": "ftp://x/"}) as resp:
                assert resp.status == 400
            async with session.post(url, data=b"x" * 4096) as resp:
                assert resp.status == 413

    err = await _run_helper_briefly(config, port, requests)
    access = [e for e in map(json.loads, err.splitlines()) if e["event"] == "helper_access"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("GET", "/", 200), ("POST", "/", 400), ("POST", "/", 413)]
    assert all(e["client"] == "127.0.0.0/24" for e in access)
    assert not any("127.0.0.1" in json.dumps(e) for e in access)
    assert access[0]["bytes_out"] > 0 and access[2]["bytes_in"] == 4096
    assert all(e["duration"] >= 0 for e in access)
