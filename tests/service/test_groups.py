"""Groups in a real daemon: a watchlist sweeps on its own clock while a long default sweep
runs, through the same worker pool, and every record names its group."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config, read_segments

pytestmark = pytest.mark.slow


def _with_group(config: Path, name: str, interval: float, urls: list[str]) -> Path:
    quoted = ", ".join(f'"{url}"' for url in urls)
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[[targets.groups]]\nname = "{name}"\ninterval = {interval}\n'
                  f"urls = [{quoted}]\n")
    return config


async def test_a_watch_group_sweeps_while_a_long_default_sweep_runs(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    out = tmp_path / "out"
    slow = [site.url(f"/slow?s=2&i={i}") for i in range(8)]  # 2 slots: about 8 s
    config = daemon_config(tmp_path / "c.toml", urls=slow, out=out,
                           limits={"rate": 1000, "burst": 1000, "concurrency": 2},
                           schedule={"interval": 3600, "jitter": 0})
    _with_group(config, "watch", 0.3, [site.url("/watch")])
    daemon = await start_daemon(config)
    ready = await daemon.wait_event("daemon_ready")
    assert ready["groups"] == {"default": 8, "watch": 1}
    default_done = await daemon.wait_event("sweep_finished", timeout=40)
    while default_done["group"] != "default":
        default_done = await daemon.wait_event(
            "sweep_finished", count=len(daemon.events("sweep_finished")) + 1, timeout=40)
    finished = daemon.events("sweep_finished")
    watch_before = [e for e in finished[:finished.index(default_done)] if e["group"] == "watch"]
    # The watchlist did not wait for the default sweep: several of its sweeps finished first,
    # although the two slow measurements in flight held the whole (shared) pool.
    assert len(watch_before) >= 2, [e["group"] for e in finished]
    assert all(e["measured"] == 1 and e["complete"] for e in watch_before)
    assert await daemon.stop() == 0
    records = read_segments(out)
    groups = {r["input"]: r["annotations"]["kzprobe_group"] for r in records}
    assert groups[site.url("/watch")] == "watch"
    assert {groups[url] for url in slow if url in groups} == {"default"}
    assert all(len(r["x_measurement_uid"]) == 32 for r in records)
    assert len({r["x_measurement_uid"] for r in records}) == len(records)
    assert site.hits("/slow") <= 8 + 2  # the default group was not re-swept meanwhile
