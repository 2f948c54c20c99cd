"""[limits] daily_bytes in a real daemon: the default group's first sweep waits until its cap
fits, later ones are spread out to fit the day, the watchlist keeps its interval, the log
says why and /healthz shows it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from kzprobe.ops.budget import TARGET_OVERHEAD, seconds_to_midnight
from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(seconds_to_midnight(time.time()) < 900,
                       reason="the budget resets at 00:00 UTC, minutes from now"),
]
BODY_CAP = 1024  # [limits] body_bytes (its least): 3 targets cap a default sweep at 52 KB


def _config(tmp_path: Path, site: Site, daily: int) -> Path:
    return daemon_config(tmp_path / "c.toml", urls=[site.url(f"/d{i}") for i in range(3)],
                         out=tmp_path / "out", limits={"daily_bytes": daily,
                                                       "body_bytes": BODY_CAP},
                         schedule={"interval": 0.3, "jitter": 0})


async def test_the_watchlist_keeps_its_interval_when_the_default_group_cannot_fit(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    # A watch sweep every 0.3 s would need far more than a 100 KB day: once its first sweep
    # has sized it, nothing is left for the default group's first sweep (at its cap).
    config = _config(tmp_path, site, 100_000)
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[[targets.groups]]\nname = "watch"\ninterval = 0.3\n'
                  f'urls = ["{site.url("/w")}"]\n')
    daemon = await start_daemon(config)
    stretch = await daemon.wait_event("bandwidth_budget_stretch", timeout=30)
    assert stretch["state"] == "spent", stretch
    assert "default group waits for 00:00 UTC" in stretch["reason"], stretch
    assert "100.0 KB" in stretch["reason"] and "for a first sweep at most" in stretch["reason"]
    assert stretch["next_in_s"] > 60
    status, body = await daemon.get("/healthz")
    assert status == 200
    assert "waits for 00:00 UTC" in json.loads(body)["details"]["bandwidth_budget"]
    watch_before = site.hits("/w")
    await asyncio.sleep(3)
    assert site.hits("/w") >= watch_before + 4  # the watchlist keeps sweeping
    assert site.hits("/d") == 0  # the default group never started
    finished = daemon.events("sweep_finished")
    assert finished and all(e["group"] == "watch" and e["bytes_received"] > 0 for e in finished)
    assert await daemon.stop() == 0


async def test_the_first_sweep_runs_when_its_cap_fits_then_the_rest_spread_out(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    # 60 KB: room for the first sweep at its cap; once measured (a few KB), the sweeps that
    # still fit today are spread over the hours to midnight, not every 0.3 s.
    cap = 3 * (BODY_CAP + TARGET_OVERHEAD)
    daemon = await start_daemon(_config(tmp_path, site, cap + 8_000))
    first = await daemon.wait_event("sweep_finished", timeout=30)
    assert first["group"] == "default" and first["bytes_received"] > 0
    stretch = await daemon.wait_event("bandwidth_budget_stretch", timeout=30)
    assert stretch["state"] == "stretched" and "more sweep" in stretch["reason"], stretch
    assert stretch["next_in_s"] > 30, stretch
    _, body = await daemon.get("/healthz")
    assert "more sweep" in json.loads(body)["details"]["bandwidth_budget"]
    await asyncio.sleep(3)
    assert site.hits("/d0") == 1  # at the configured 0.3 s it would have been ~10
    assert await daemon.stop() == 0
