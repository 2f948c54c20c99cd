"""Real parts for service tests: a recording web site, ``kzprobe run`` as a subprocess,
a notify socket, and readers for what the daemon left on disk.

Everything binds 127.0.0.1 (or an abstract AF_UNIX name) and is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

KZPROBE = [sys.executable, "-m", "kzprobe"]
PAGE = ("<html><head><title>Service test page</title></head><body>"
        + "measured text " * 40 + "</body></html>")
BLOCKPAGE_MARK = "Access restricted by kzprobe-test-isp"
BLOCKPAGE = f"<html><head><title>Blocked</title></head><body>{BLOCKPAGE_MARK}</body></html>"
# An OONI-format fingerprint for BLOCKPAGE, for [analysis] fingerprint_files: a blockpage is
# self-proving, so a site the test switches to it is "blocked" without a control.
BLOCKPAGE_FINGERPRINTS = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
    "expected_countries,source,exp_url,notes\n"
    f"test.isp_blockpage,isp,,body,contains,{BLOCKPAGE_MARK},5,KZ,test,,\n")


@dataclass
class Site:
    """HTTP on 127.0.0.1 that records each request (path and query) as it starts."""

    seen: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # paths answered with BLOCKPAGE now
    port: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, prefix: str = "/") -> int:
        return sum(1 for path in self.seen if path.startswith(prefix))

    async def _page(self, request: web.Request) -> web.Response:
        self.seen.append(request.path_qs)
        page = BLOCKPAGE if request.path in self.blocked else PAGE
        return web.Response(text=page, content_type="text/html")

    async def _slow(self, request: web.Request) -> web.Response:
        self.seen.append(request.path_qs)
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=PAGE, content_type="text/html")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/{tail:.*}", self._page)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return orjson.dumps(str(value)).decode()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def daemon_config(path: Path, *, urls: list[str], out: Path,
                  **sections: Mapping[str, object]) -> Path:
    """Write a loopback daemon config: fast timeouts, metrics on a free port, ``urls``."""
    data: dict[str, dict[str, object]] = {
        "timeouts": {"connect": 2.0, "http": 60.0, "measurement": 90.0},
        "analysis": {"not_bogon": ["127.0.0.0/8"], "retries": 0},
        "limits": {"rate": 1000, "burst": 1000, "concurrency": 5},
        "schedule": {"interval": 0.5, "jitter": 0},
        "output": {"dir": out},
        "service": {"metrics_listen": "127.0.0.1:0", "shutdown_grace": 10},
        "targets": {"urls": urls},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
                   for name, table in data.items())
    path.write_text(text, encoding="utf-8")
    return path


class DaemonProcess:
    """``kzprobe run`` in a subprocess; its JSON log lines are read from a file."""

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None,
                 command: str = "run") -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.command = command  # "run", or "helper"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> DaemonProcess:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *KZPROBE, self.command, "--config", str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=err, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    async def wait_event(self, name: str, count: int = 1, timeout: float = 15.0
                         ) -> dict[str, Any]:
        """The ``count``-th log event called ``name``; fails if the daemon exits first."""
        async with asyncio.timeout(timeout):
            while len(found := self.events(name)) < count:
                assert self.proc is not None and self.proc.returncode is None, self.stderr()
                await asyncio.sleep(0.05)
        return found[count - 1]

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def address(self) -> str:
        return str((await self.wait_event("metrics_listening"))["address"])

    async def get(self, path: str) -> tuple[int, str]:
        url = f"http://{await self.address()}{path}"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return resp.status, await resp.text()

    async def metrics(self) -> dict[str, float]:
        """Samples by ``name{label=value,...}`` (labels sorted), from a real scrape."""
        status, text = await self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class NotifySocket:
    """A systemd-style notify socket (abstract AF_UNIX datagram) collecting messages."""

    def __init__(self) -> None:
        self.name = f"@kzprobe-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.messages.append((time.monotonic(), data.decode()))

    def start(self) -> NotifySocket:
        self._task = asyncio.create_task(self._collect())
        return self

    def fields(self) -> list[str]:
        return [line for _, text in self.messages for line in text.split("\n")]

    def count(self, line: str, since: float = 0.0) -> int:
        return sum(text.split("\n").count(line) for at, text in self.messages if at >= since)

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for line in self.fields():
                    if predicate(line):
                        return line
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close()


def read_segments(out: Path) -> list[dict[str, Any]]:
    """Every record in every closed segment; any corrupt line fails the test."""
    records = []
    for path in sorted(out.iterdir()):
        if path.name.endswith(".ndjson.gz"):
            data = gzip.decompress(path.read_bytes())
        elif path.name.endswith(".ndjson"):
            data = path.read_bytes()
        else:
            continue
        assert data.endswith(b"\n") or not data, f"{path.name}: torn last line"
        records += [orjson.loads(line) for line in data.splitlines()]
    return records


def leftovers(out: Path) -> list[str]:
    """Files a clean shutdown must not leave: open segments and half-compressed ones."""
    return sorted(p.name for p in out.iterdir() if p.name.endswith((".part", ".tmp")))


def interrupted(record: Mapping[str, Any]) -> bool:
    return bool(record["test_keys"].get("http_experiment_failure") == "interrupted")
