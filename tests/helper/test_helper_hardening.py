"""`kzprobe helper` as an internet-facing service: who the client is, what it may make the
helper dial and fetch, and how much of the helper one client can take (issue 14, section 3).

Every test talks to a real helper on 127.0.0.1 (distinct sources come from binding
127.0.0.x, or from a trusted proxy's X-Forwarded-For).
"""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kzprobe.config import ConfigError, HelperConfig, parse_config
from kzprobe.helper import ClientTable, RunningHelper, start_helper
from tests.servers import DnsServer, WebSite, refused_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def helper(config_factory: Callable[..., Any], dns_server: DnsServer
                 ) -> AsyncIterator[Callable[..., Any]]:
    """Start a helper on 127.0.0.1:0 with the given [helper] (and other) settings."""
    running: list[RunningHelper] = []

    async def start(*, sections: dict[str, dict[str, object]] | None = None,
                    **values: object) -> str:
        config = config_factory(dns=dns_server, helper={"listen": "127.0.0.1:0", **values},
                                **(sections or {}))
        runner, url = await start_helper(config)
        running.append(runner)
        return url

    yield start
    for runner in running:
        await runner.cleanup()


async def _post(url: str, payload: Any, *, source: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.post(url, json=payload, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# ----------------------------------------------------------------------- (b) listen

def _helper_config(**helper: object) -> HelperConfig:
    return parse_config({"helper": helper}).config.helper


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "[::]:8765", "192.0.2.1:8765",
                                    "helper.example:8765"])
def test_non_loopback_listen_without_token_is_refused(listen: str) -> None:
    """An open helper on a public address is a config error (check-config says so too)."""
    with pytest.raises(ConfigError, match="token"):
        _helper_config(listen=listen)


@pytest.mark.parametrize("listen", ["127.0.0.1:8765", "[::1]:8765", "localhost:8765",
                                    "127.0.0.9:1"])
def test_loopback_listen_without_token_is_fine(listen: str) -> None:
    assert _helper_config(listen=listen).token is None


def test_token_or_explicit_allow_anonymous_permits_a_public_listen() -> None:
    assert _helper_config(listen="0.0.0.0:8765", token="s3cret").token == "s3cret"
    assert _helper_config(listen="0.0.0.0:8765", allow_anonymous=True).allow_anonymous


def test_check_config_reports_an_anonymous_public_helper(tmp_path: Path) -> None:
    """One line, exit 2, no traceback."""
    import subprocess

    config = tmp_path / "kz.toml"
    config.write_text('[targets]\nurls = ["https://a.test/"]\n[helper]\nlisten = "0.0.0.0:1"\n')
    proc = subprocess.run([sys.executable, "-m", "kzprobe", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "token" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_anonymous_or_plain_http_public_helpers_are_warned_about() -> None:
    """allow_anonymous on a public listen, and a token sent in clear, are warned at start."""
    from kzprobe.helper import startup_warnings

    anonymous = _helper_config(listen="0.0.0.0:8765", allow_anonymous=True)
    assert [event for event, _ in startup_warnings(anonymous)] == ["helper_anonymous_public"]
    clear = _helper_config(listen="0.0.0.0:8765", token="s3cret")
    assert [event for event, _ in startup_warnings(clear)] == ["helper_token_over_http"]
    assert startup_warnings(_helper_config()) == []


async def _run_helper_briefly(config: Path, port: int,
                              during: Callable[[], Any] | None = None) -> str:
    import signal

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kzprobe", "helper", "--config", str(config),
        stderr=asyncio.subprocess.PIPE)
    chunks: list[bytes] = []

    async def drain() -> None:  # read as it comes: a full pipe would stall the helper
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            chunks.append(chunk)

    drainer = asyncio.ensure_future(drain())
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        if during is not None:
            await during()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        await asyncio.wait_for(drainer, 5)
    return b"".join(chunks).decode()


# ----------------------------------------------------------------------- (c) ports

def _preset_ports() -> set[int]:
    ports = set()
    for name in ("messaging.csv", "circumvention.csv", "encrypted-dns.csv"):
        with (ROOT / "config" / "targets" / name).open(newline="") as stream:
            for row in csv.DictReader(stream):
                if row["url"].startswith("#"):
                    continue
                authority = row["url"].split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
                ports.add(int(authority.rsplit(":", 1)[1]))
    return ports


def test_default_allowed_ports_are_web_plus_the_bundled_presets() -> None:
    assert set(HelperConfig().allowed_ports) == {80, 443} | _preset_ports()


async def test_a_port_outside_allowed_ports_is_refused_without_dialling(
        helper, website: WebSite) -> None:
    """tcp://127.0.0.1:<any> and http://...:<any>: 400 and nothing dialled."""
    url = await helper(allow_nets=["127.0.0.0/8"])
    address = f"127.0.0.1:{website.http_port}"
    for request in (f"tcp://{address}", f"http://{address}/"):
        status, body = await _post(url, {"http_request": request, "tcp_connect": [address]})
        assert status == 400, body
        assert "port" in body["error"]
    assert website.hits == 0


async def test_allowed_ports_lets_the_operator_open_a_port(helper, website: WebSite) -> None:
    url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[80, website.http_port])
    address = f"127.0.0.1:{website.http_port}"
    status, body = await _post(url, {"http_request": f"http://{address}/",
                                     "tcp_connect": [address]})
    assert status == 200 and body["http_request"]["status_code"] == 200


async def test_a_redirect_to_a_port_outside_allowed_ports_is_not_followed(helper) -> None:
    """The site redirects to a port the helper may not dial: that hop is never dialled."""
    other = CountingSite(big=10)
    await other.start()
    app = web.Application()

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(other.url("/"))

    app.router.add_get("/", hop)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hop_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[hop_port])
        status, body = await _post(url, {"http_request": f"http://127.0.0.1:{hop_port}/"})
        assert status == 200
        assert body["http_request"]["status_code"] == -1
        assert other.hits == 0
    finally:
        await runner.cleanup()
        await other.close()


# ----------------------------------------------------------------------- (a) proxies

async def test_forwarded_for_is_ignored_from_untrusted_peers(helper) -> None:
    url = await helper(allow_nets=["127.0.0.0/8"])
    _, body = await _post(url, {"http_request": "tcp://127.0.0.1:80"},
                          headers={"X-Forwarded-For": "203.0.113.9"})
    assert body["x_client_ip"] == "127.0.0.1"


async def test_trusted_proxy_forwarded_for_gives_the_client_address(helper) -> None:
    """Rightmost untrusted hop of X-Forwarded-For; Forwarded: for= when that is absent."""
    url = await helper(allow_nets=["127.0.0.0/8"], trusted_proxies=["127.0.0.1/32",
                                                                    "10.0.0.0/8"])
    request = {"http_request": "tcp://127.0.0.1:80"}
    cases = [
        ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, "203.0.113.9"),
        ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"),
        ({"Forwarded": 'for="[2001:DB8::7]:4711";proto=https'}, "2001:db8::7"),
        ({"Forwarded": "for=192.0.2.60;by=10.0.0.1, for=10.0.0.2"}, "192.0.2.60"),
        ({}, "127.0.0.1"),
        ({"X-Forwarded-For": "garbage"}, "127.0.0.1"),
    ]
    for headers, expected in cases:
        status, body = await _post(url, request, headers=headers)
        assert status == 200, body
        assert body["x_client_ip"] == expected, headers
    # another peer (127.0.0.2 is not listed) cannot claim an address
    _, body = await _post(url, request, source="127.0.0.2",
                          headers={"X-Forwarded-For": "203.0.113.9"})
    assert body["x_client_ip"] == "127.0.0.2"


async def test_rate_limit_buckets_follow_the_forwarded_client(helper) -> None:
    """Behind a proxy each client has its own budget (the proxy's address is not a bucket)."""
    url = await helper(trusted_proxies=["127.0.0.1/32"], rate_per_client=0.01, rate_burst=2)
    bad = {"http_request": "ftp://x/"}

    async def statuses(client: str) -> list[int]:
        return [(await _post(url, bad, headers={"X-Forwarded-For": client}))[0]
                for _ in range(3)]

    assert await statuses("203.0.113.1") == [400, 400, 429]
    assert await statuses("203.0.113.2") == [400, 400, 429]


# ----------------------------------------------------------------------- (e) buckets

async def test_ipv6_clients_share_a_bucket_per_64(helper) -> None:
    url = await helper(trusted_proxies=["127.0.0.1/32"], rate_per_client=0.01, rate_burst=2)
    bad = {"http_request": "ftp://x/"}
    seen = [(await _post(url, bad, headers={"X-Forwarded-For": f"2001:db8:1:2::{i}"}))[0]
            for i in range(1, 4)]
    assert seen == [400, 400, 429]
    status, _ = await _post(url, bad, headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    assert status == 400  # another /64


def test_client_table_evicts_least_recently_used_not_everyone() -> None:
    """10,001 distinct sources used to reset every bucket; now only the stalest goes."""
    table: ClientTable[list[int]] = ClientTable(capacity=10_000, make=lambda: [0])
    busy = table.get("192.0.2.1")
    busy[0] = 99
    for n in range(10_000):
        table.get(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        if n % 1000 == 0:
            table.get("192.0.2.1")  # still in use: stays
    assert len(table) == 10_000
    assert table.get("192.0.2.1")[0] == 99
    assert "10.0.0.0" not in table  # the least recently used went
    assert "10.0.0.1" in table and "10.0.39.15" in table  # only it


async def test_per_client_connection_cap_at_accept(helper) -> None:
    """One address holding many idle connections cannot lock others out."""
    url = await helper(max_connections_per_client=3, max_connections=100)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed at once
    writer.close()
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(url) as resp:
        assert resp.status == 200
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200  # slots come back when connections close


# ----------------------------------------------------------------------- (f) destination

async def test_helper_has_its_own_per_destination_limit(helper, dns_server: DnsServer,
                                                        website: WebSite) -> None:
    """With the probe's per_host = 2, eight slow requests to one address still finish."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[website.http_port],
                       deadline=2.5, sections={"limits": {"per_host": 2}})
    slow = {"http_request": f"http://site.test:{website.http_port}/slow?s=1"}
    results = await asyncio.gather(*(_post(url, slow) for _ in range(8)))
    assert [status for status, _ in results] == [200] * 8


# ----------------------------------------------------------------------- (d) bytes

@dataclass
class CountingSite:
    """A raw HTTP server that counts the body bytes it managed to send, per path."""

    big: int
    server: asyncio.AbstractServer | None = None
    sent: int = 0
    hits: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.hits += 1
            status, extra = "200 OK", ""
            if path.startswith("/chain/"):
                n = int(path.rsplit("/", 1)[1])
                status, extra = "302 Found", f"Location: /chain/{n + 1}\r\n"
            writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Type: text/html\r\n"
                         f"Content-Length: {self.big}\r\nConnection: close\r\n\r\n".encode())
            chunk = b"<title>big</title>" + b"x" * (16 * 1024 - 18)
            left = self.big
            while left > 0:
                part = chunk[:left]
                writer.write(part)
                await writer.drain()
                self.sent += len(part)
                left -= len(part)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def counting_site() -> AsyncIterator[CountingSite]:
    site = CountingSite(big=4 * 1024 * 1024)
    await site.start()
    yield site
    await site.close()


async def _settle(site: CountingSite) -> int:
    await asyncio.sleep(0.5)
    return site.sent


async def test_bytes_fetched_per_request_are_capped(helper, counting_site: CountingSite) -> None:
    """A 4 MiB page: the helper stops at max_fetch_bytes (it used to take limits.body_bytes,
    512 KiB, plus read-ahead), and still answers with the title."""
    url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[counting_site.port],
                       max_fetch_bytes=64 * 1024)
    status, body = await _post(url, {"http_request": counting_site.url("/big")})
    sent = await _settle(counting_site)
    assert status == 200 and body["http_request"]["title"] == "big"
    assert body["http_request"]["body_length"] <= 64 * 1024
    assert sent < 400 * 1024, sent


async def test_a_redirect_chain_shares_one_byte_budget(helper,
                                                       counting_site: CountingSite) -> None:
    """Eleven hops of 4 MiB redirect bodies: the chain stops when the budget is spent."""
    url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[counting_site.port],
                       max_fetch_bytes=64 * 1024)
    status, _ = await _post(url, {"http_request": counting_site.url("/chain/0")})
    sent = await _settle(counting_site)
    assert status == 200
    assert counting_site.hits <= 2, counting_site.hits
    assert sent < 800 * 1024, sent


async def test_client_byte_budget_per_minute(helper, counting_site: CountingSite) -> None:
    """A client that made the helper fetch its budget gets 429 until it refills."""
    url = await helper(allow_nets=["127.0.0.0/8"], allowed_ports=[counting_site.port],
                       max_fetch_bytes=64 * 1024, client_bytes_per_minute=100 * 1024)
    request = {"http_request": counting_site.url("/big")}
    statuses = [(await _post(url, request))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, _ = await _post(url, request, source="127.0.0.2")
    assert status == 200  # another client is unaffected


async def test_global_request_budget(helper) -> None:
    url = await helper(max_requests_per_minute=3, rate_burst=100)
    bad = {"http_request": "ftp://x/"}
    statuses = [(await _post(url, bad, source=f"127.0.0.{n}"))[0] for n in range(1, 6)]
    assert statuses == [400, 400, 400, 503, 503]


# ----------------------------------------------------------------------- (g) logs

async def test_malformed_http_floods_stay_bounded_json(tmp_path: Path) -> None:
    """2,000 malformed requests: stderr is a few JSON lines, not 10 traceback lines each."""
    port = refused_port()
    config = tmp_path / "helper.toml"
    config.write_text(f'[helper]\nlisten = "127.0.0.1:{port}"\naccess_log_sample = 0.0\n')

    async def flood() -> None:
        async def one() -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                await writer.drain()
                await asyncio.wait_for(reader.read(), 5)
                writer.close()
            except (OSError, TimeoutError):
                pass

        for _ in range(40):
            await asyncio.gather(*(one() for _ in range(50)))

    err = await _run_helper_briefly(config, port, flood)
    lines = err.splitlines()
    assert all(json.loads(line) for line in lines)  # every line is JSON
    assert "Traceback" not in err
    assert len(err) < 20_000, len(err)
    events = [json.loads(line)["event"] for line in lines]
    assert "helper_server_error" in events
    suppressed = [json.loads(line) for line in lines
                  if json.loads(line)["event"] == "helper_server_errors_suppressed"]
    logged = events.count("helper_server_error")
    assert suppressed and logged + suppressed[0]["count"] >= 2000


async def test_access_log_is_sampled_json(tmp_path: Path) -> None:
    port = refused_port()
    config = tmp_path / "helper.toml"
    config.write_text(f'[helper]\nlisten = "127.0.0.1:{port}"\naccess_log_sample = 1.0\n')

    async def requests() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(f"http://127.0.0.1:{port}/",
                                        json={"http_request": "ftp://x/"}) as resp:
                    assert resp.status == 400

    err = await _run_helper_briefly(config, port, requests)
    access = [e for e in map(json.loads, err.splitlines()) if e["event"] == "helper_access"]
    assert len(access) == 3
    assert access[0]["status"] == 400 and access[0]["client"] == "127.0.0.0/24"
    assert access[0]["duration"] >= 0


def test_helper_config_defaults_are_bounded() -> None:
    d = HelperConfig()
    assert d.max_fetch_bytes <= 1024 * 1024 and d.per_destination > 4
    assert 0 <= d.access_log_sample <= 1
    assert replace(d, token="x").token == "x"


@pytest.mark.parametrize(("ports", "expected"), [
    ([80, "1194-1195"], {80, 1194, 1195}), (["443-443"], {443}),
])
def test_allowed_ports_accepts_ranges(ports: list[object], expected: set[int]) -> None:
    assert _helper_config(allowed_ports=ports).allowed_ports == expected


@pytest.mark.parametrize("ports", [[], [0], [65536], ["9-1"], ["a-b"], [True], ["80"],
                                   ["1-99999999"]])
def test_allowed_ports_rejects_nonsense(ports: list[object]) -> None:
    with pytest.raises(ConfigError, match="allowed_ports"):
        _helper_config(allowed_ports=ports)


async def test_tls_helper_serves_through_the_connection_gate(helper, ca, tmp_path: Path) -> None:
    """With tls_cert/tls_key the per-client gate wraps the TLS connection: it still serves,
    and the cap still closes the extra connection."""
    import ssl

    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "helper.crt", tmp_path / "helper.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    url = await helper(tls_cert=str(cert_file), tls_key=str(key_file),
                       max_connections_per_client=1)
    assert url.startswith("https://")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    connector = aiohttp.TCPConnector(ssl=context, limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as resp:
            assert resp.status == 200 and (await resp.json())["message"]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # over the cap: closed
        writer.close()
