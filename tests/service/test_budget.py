"""[limits] daily_bytes in a real daemon: the default group's sweeps are spread out to fit the
day, the watchlist keeps its interval, the log says why and /healthz shows it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config

pytestmark = pytest.mark.slow


async def test_a_daily_budget_stretches_the_default_group_but_not_the_watchlist(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    # Each default sweep moves a few KB: a 100 KB day leaves room for only a few more today,
    # so the default group's interval stretches to hours; the watch group keeps 0.3 s.
    config = daemon_config(tmp_path / "c.toml", urls=[site.url(f"/d{i}") for i in range(3)],
                           out=tmp_path / "out", limits={"daily_bytes": 100_000},
                           schedule={"interval": 0.3, "jitter": 0})
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[[targets.groups]]\nname = "watch"\ninterval = 0.3\n'
                  f'urls = ["{site.url("/w")}"]\n')
    daemon = await start_daemon(config)
    stretch = await daemon.wait_event("bandwidth_budget_stretch", timeout=30)
    assert "default" in stretch["reason"] and "100.0 KB" in stretch["reason"], stretch
    assert stretch["interval_s"] > 60
    status, body = await daemon.get("/healthz")
    assert status == 200
    assert "bandwidth_budget" in json.loads(body)["details"]
    default_before = site.hits("/d0")
    watch_before = site.hits("/w")
    await asyncio.sleep(3)
    assert site.hits("/w") >= watch_before + 4  # the watchlist keeps sweeping
    assert site.hits("/d0") == default_before  # the default group waits
    finished = daemon.events("sweep_finished")
    assert all(e["bytes_received"] > 0 for e in finished)
    assert await daemon.stop() == 0
