"""Records shaped like kzprobe's, a webhook receiver on 127.0.0.1, and an Alerts factory."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from kzprobe.alerts.core import Alerts
from kzprobe.config.model import AlertsConfig, Config, OutputConfig, Webhook

_minutes = itertools.count()


def record(target: str = "https://twitter.com/", *, blocking: Any = False,
           accessible: Any = True, codes: tuple[str, ...] = (), sweep: str = "s1",
           group: str = "watch", asn: str = "AS9198", start: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """A written web_connectivity record as the alert tracker sees it."""
    if start is None:
        minute = next(_minutes) % (24 * 60)
        start = f"2026-12-07 {minute // 60:02d}:{minute % 60:02d}:00"
    keys = {"blocking": blocking, "accessible": accessible, "interference": list(codes),
            "sni_blocking_confirmed": None, "blockpage": None}
    keys.update(extra.pop("test_keys", {}))
    return {"input": target, "probe_cc": "KZ", "probe_asn": asn, "category_code": "GRP",
            "measurement_start_time": start, "x_measurement_uid": uuid.uuid4().hex,
            "annotations": {"kzprobe_sweep": sweep, "kzprobe_group": group,
                            "kzprobe_probe_id": "vps1"},
            "test_keys": keys, **extra}


def blocked(target: str = "https://twitter.com/", codes: tuple[str, ...] = ("tls.timeout",),
            **kw: Any) -> dict[str, Any]:
    return record(target, blocking="tls", accessible=False, codes=codes, **kw)


def ok(target: str = "https://twitter.com/", **kw: Any) -> dict[str, Any]:
    return record(target, **kw)


def down(target: str = "https://twitter.com/", **kw: Any) -> dict[str, Any]:
    return record(target, blocking=False, accessible=False, **kw)


@dataclass
class Receiver:
    """A webhook receiver: records every POST; answers ``fail`` times 503, then 200."""

    fail: int = 0
    status: int = 503
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # "METHOD /path" of each request
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.paths.append(f"{request.method} {request.path}")
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=self.status)
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests answered 200 (the last ``fail`` were not)."""
        return [orjson.loads(body) for _, body in self.requests]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.close()


def alerts_config(out: Path, *webhooks: Webhook, **alerts: Any) -> Config:
    """A Config whose alerts write to ``out``; fast retries unless told otherwise."""
    settings: dict[str, Any] = {"max_backoff": 0.2, "timeout": 5.0, **alerts}
    return Config(output=OutputConfig(dir=out),
                  alerts=replace(AlertsConfig(), webhooks=tuple(webhooks), **settings))


MakeAlerts = Callable[..., Awaitable[Alerts]]


@pytest.fixture
async def make_alerts() -> AsyncIterator[MakeAlerts]:
    """Started Alerts, closed at the end of the test (those the test did not close)."""
    made: list[Alerts] = []

    async def make(config: Config, probe_id: str | None = "vps1") -> Alerts:
        alerts = Alerts(config, probe_id=probe_id)
        await alerts.start()
        made.append(alerts)
        return alerts

    yield make
    for alerts in made:
        await alerts.aclose(0.1)


def read_events(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted(out.glob("events-*.ndjson"))
            for line in path.read_bytes().splitlines()]


def event_logs(out: Path) -> list[Path]:
    return sorted(out.glob("events-*.ndjson"))


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)
