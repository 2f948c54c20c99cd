"""Alerts end to end with the real tools: a watchlist target flips blocked, ok and blocked
again in one daemon run; kzprobe's own webhook gets the change events, and Debian's
Prometheus scraping the daemon fires the shipped rule, which Debian's Alertmanager delivers
to a local receiver (and resolves again)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.deploy.tools import require
from tests.service.conftest import StartDaemon
from tests.service.harness import BLOCKPAGE_FINGERPRINTS, Site, daemon_config

pytestmark = pytest.mark.slow
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"


class Receiver:
    """Collects webhook POSTs (JSON bodies) on 127.0.0.1, by path."""

    def __init__(self) -> None:
        self.posts: dict[str, list[dict[str, Any]]] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _post(self, request: web.Request) -> web.Response:
        self.posts.setdefault(request.path, []).append(await request.json())
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait(self, path: str, match: Callable[[dict[str, Any]], bool],
                   timeout: float = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for body in self.posts.get(path, []):
                    if match(body):
                        return body
                await asyncio.sleep(0.1)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _alertmanager(tmp: Path, tool: str, receiver: Receiver
                  ) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    (tmp / "am.yml").write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, input]\n  group_wait: 1s\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: "
        f"\"{receiver.url('/alertmanager')}\"\n        send_resolved: true\n", encoding="utf-8")
    proc = _start([tool, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                   "--log.level=warn"], tmp / "am.log")
    return proc, f"127.0.0.1:{port}"


def _prometheus(tmp: Path, tool: str, scrape: str, alertmanager: str, port: int
                ) -> subprocess.Popen[bytes]:
    shutil.copy(RULES, tmp / "rules.yml")
    (tmp / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [rules.yml]\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f"        - targets: [\"{alertmanager}\"]\n"
        f"scrape_configs:\n  - job_name: kzprobe\n    static_configs:\n"
        f"      - targets: [\"{scrape}\"]\n", encoding="utf-8")
    return _start([tool, f"--config.file={tmp / 'prom.yml'}",
                   f"--storage.tsdb.path={tmp / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                  tmp / "prom.log")


async def _diagnose(prom_port: int, am_address: str) -> str:
    """What Prometheus and Alertmanager hold, for a failure message."""
    import aiohttp

    found = []
    async with aiohttp.ClientSession() as session:
        for url in (f"http://127.0.0.1:{prom_port}/api/v1/query?query=kzprobe_target_state",
                    f"http://127.0.0.1:{prom_port}/api/v1/targets",
                    f"http://127.0.0.1:{prom_port}/api/v1/alerts",
                    f"http://{am_address}/api/v2/alerts"):
            async with session.get(url) as resp:
                found.append(f"{url}: {(await resp.text())[:1500]}")
    return "\n".join(found)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _alert(body: dict[str, Any], status: str) -> bool:
    return any(a["labels"].get("alertname") == "KzprobeWatchlistTargetBlocked"
               and a["status"] == status for a in body.get("alerts", []))


async def _helper(tmp: Path, start_daemon: StartDaemon) -> str:
    """A real ``kzprobe helper`` on loopback (the control: without one a page that loads is
    ``unknown``, not ``ok``, and an unblock could not be told)."""
    config = tmp / "helper.toml"
    config.write_text('[helper]\nlisten = "127.0.0.1:0"\nallow_nets = ["127.0.0.0/8"]\n'
                      'allowed_ports = ["1-65535"]\n', encoding="utf-8")
    helper = await start_daemon(config, command="helper")
    return str((await helper.wait_event("helper_listening"))["url"])


async def test_a_flipping_watch_target_alerts_through_webhook_prometheus_and_alertmanager(
        tmp_path: Path, site: Site, receiver: Receiver, start_daemon: StartDaemon) -> None:
    tools = require("prometheus", "prometheus-alertmanager")
    (tmp_path / "fp.csv").write_text(BLOCKPAGE_FINGERPRINTS, encoding="utf-8")
    helper_url = await _helper(tmp_path, start_daemon)
    config = daemon_config(tmp_path / "c.toml", urls=[], out=tmp_path / "out",
                           analysis={"fingerprint_files": [tmp_path / "fp.csv"]},
                           control={"helper_url": helper_url})
    flip = site.url("/flip")
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[alerts]\nconfirm = 2\nwebhooks = [{{ url = "{receiver.url("/kzprobe")}",'
                  f' format = "json" }}]\n'
                  f'[[targets.groups]]\nname = "watch"\ninterval = 0.5\nurls = ["{flip}"]\n')
    daemon = await start_daemon(config)
    am, am_address = _alertmanager(tmp_path, tools["prometheus-alertmanager"], receiver)
    prom_port = _free_port()
    prom = _prometheus(tmp_path, tools["prometheus"], await daemon.address(), am_address,
                       prom_port)
    try:
        await daemon.wait_event("sweep_finished", count=3)  # ok, confirmed: no event
        site.blocked.add("/flip")
        blocked = await receiver.wait("/kzprobe", lambda e: e.get("kind") == "blocked")
        assert blocked["input"] == flip and blocked["group"] == "watch"
        assert blocked["to"] == {"state": "blocked", "interference": ["http.blockpage"]}
        try:
            await receiver.wait("/alertmanager", lambda b: _alert(b, "firing"), timeout=90)
        except TimeoutError:
            raise AssertionError(await _diagnose(prom_port, am_address)) from None
        site.blocked.clear()
        unblocked = await receiver.wait("/kzprobe", lambda e: e.get("kind") == "unblocked")
        assert unblocked["from"]["state"] == "blocked" and unblocked["to"]["state"] == "ok"
        await receiver.wait("/alertmanager", lambda b: _alert(b, "resolved"), timeout=90)
        site.blocked.add("/flip")  # blocked again, in the same run: a new event, a new alert
        await receiver.wait("/kzprobe", lambda e: e.get("kind") == "blocked"
                            and e["seq"] > unblocked["seq"])
    finally:
        _stop(prom)
        _stop(am)
    assert await daemon.stop() == 0
    events = receiver.posts["/kzprobe"]
    assert [e["kind"] for e in events] == ["blocked", "unblocked", "blocked"], events
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert all(e["at"] <= e["confirmed_at"] for e in events)
