"""SIGHUP: a new target list takes over at the next sweep; a broken config changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from kzprobe.config import parse_config
from kzprobe.ops.reload import blocking_io, restartless
from kzprobe.service import run_loop
from tests.servers import eventually
from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config, interrupted, read_segments

pytestmark = pytest.mark.slow


async def test_sighup_with_new_targets_changes_what_is_measured(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """Reload mid-sweep: in-flight /a measurements finish and are kept, then only /b is measured."""
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    daemon_config(config, urls=[site.url(f"/slow?s=1&a={i}") for i in range(4)], out=out)
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits("/slow") >= 4)  # the first sweep is in flight
    daemon_config(config, urls=[site.url(f"/b?i={i}") for i in range(3)], out=out)
    daemon.signal(signal.SIGHUP)
    await daemon.wait_event("config_applied")
    a_after_reload = site.hits("/slow")
    await eventually(lambda: site.hits("/b") >= 9)  # three sweeps of the new list
    assert site.hits("/slow") == a_after_reload  # nothing of the old list started since
    assert await daemon.stop() == 0
    records = read_segments(out)
    assert len(records) == len(site.seen)
    assert not any(interrupted(r) for r in records)  # the reload dropped nothing in flight
    reloaded = daemon.events("config_reloaded")
    assert len(reloaded) == 1 and reloaded[0]["targets"] == 3


async def test_sighup_with_a_broken_config_keeps_the_running_one(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """Invalid TOML, bad values, or an empty target list: a log line, and the old config runs on."""
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    daemon_config(config, urls=[site.url("/a")], out=out)
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits("/a") >= 1)
    broken = ["[limits\nrate = 5\n",
              "[limits]\nrate = -1\n[targets]\nurls = ['http://127.0.0.1/']\n",
              "[targets]\nurls = []\n"]
    for count, text in enumerate(broken, start=1):
        config.write_text(text, encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_event("config_reload_failed", count=count)
        assert failed["level"] == "error" and str(config) in failed["error"]
    before = site.hits("/a")
    await eventually(lambda: site.hits("/a") >= before + 2)  # still sweeping the old list
    metrics = await daemon.metrics()
    assert metrics['kzprobe_config_reloads_total{result=failure}'] == 3
    assert metrics['kzprobe_config_reloads_total{result=success}'] == 0
    assert daemon.events("config_applied") == []
    assert await daemon.stop() == 0
    assert {r["input"] for r in read_segments(out)} == {site.url("/a")}


async def test_reload_of_restart_only_settings_is_reported_and_kept(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """A new output dir needs a restart: the reload says so; records keep going to the old dir."""
    out, other = tmp_path / "out", tmp_path / "other"
    config = tmp_path / "c.toml"
    daemon_config(config, urls=[site.url("/a")], out=out)
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits("/a") >= 1)
    daemon_config(config, urls=[site.url("/c")], out=other)
    daemon.signal(signal.SIGHUP)
    warning = await daemon.wait_event("config_reload_needs_restart")
    assert warning["keys"] == ["output.dir"]
    await eventually(lambda: site.hits("/c") >= 2)
    assert await daemon.stop() == 0
    assert not other.exists()
    assert site.url("/c") in {r["input"] for r in read_segments(out)}


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
async def test_sighup_with_a_target_list_that_is_not_a_file_then_sigterm_exits(
        kind: str, tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """A FIFO or /dev/zero as the new target list: the reload fails at once without reading
    it (no memory growth, no thread stuck in open()), and SIGTERM still stops the daemon."""
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    daemon_config(config, urls=[site.url("/a")], out=out)
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits("/a") >= 1)
    target = Path("/dev/zero")
    if kind == "fifo":
        target = tmp_path / "list.csv"
        os.mkfifo(target)
    daemon_config(config, urls=[], out=out, targets={"files": [str(target)]})
    daemon.signal(signal.SIGHUP)
    failed = await daemon.wait_event("config_reload_failed", timeout=10)
    assert "not a regular file" in failed["error"]
    assert _rss_kib(daemon.pid) < 400 * 1024  # /dev/zero read whole grew the daemon by ~250 MB/s
    started = time.monotonic()
    assert await daemon.stop(timeout=20) == 0
    assert time.monotonic() - started < 15


def test_reload_io_stuck_in_the_kernel_does_not_hold_up_exit() -> None:
    """Reload I/O blocked for good (an open() on a hung file system) must not keep the
    process from exiting: asyncio.to_thread's pool is joined when the loop closes."""
    gate = threading.Event()
    release = threading.Timer(8.0, gate.set)  # the stuck call ends by itself after 8 s
    release.start()

    async def reload_that_gives_up() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await blocking_io(gate.wait)

    started = time.monotonic()
    try:
        run_loop(reload_that_gives_up(), use_uvloop=False)
        assert time.monotonic() - started < 3
    finally:
        release.cancel()
        gate.set()


async def test_reload_keeps_the_probe_id_its_files_are_named_by(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """[probe] id names the open segments: a reload that sets one is reported and ignored
    until a restart, so records never disagree with their file names."""
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    daemon_config(config, urls=[site.url("/a")], out=out)
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits("/a") >= 1)
    daemon_config(config, urls=[site.url("/c")], out=out, probe={"id": "renamed"})
    daemon.signal(signal.SIGHUP)
    warning = await daemon.wait_event("config_reload_needs_restart")
    assert warning["keys"] == ["probe.id"]
    await eventually(lambda: site.hits("/c") >= 2)
    assert await daemon.stop() == 0
    stored = (out / ".probe-id").read_text().strip()
    assert {r["annotations"]["kzprobe_probe_id"] for r in read_segments(out)} == {stored}
    assert all(f"-{stored}-" in p.name for p in out.glob("*.ndjson*"))


def test_restart_only_settings_keep_their_running_values() -> None:
    """Every restart-only key is named and kept; the rest of the new config is taken."""
    old = parse_config({"output": {"dir": "/old"}}).config
    new = parse_config({
        "output": {"dir": "/new", "prefix": "other", "rotate_bytes": 4096, "rotate_seconds": 9,
                   "compress": "none", "fsync_interval": 9, "max_age_days": 3},
        "service": {"metrics_listen": "127.0.0.1:9999"},
        "schedule": {"interval": 42},
    }).config
    kept = restartless(old, new)
    assert kept.output == dataclasses.replace(old.output, max_age_days=3)
    assert kept.service.metrics_listen == old.service.metrics_listen
    assert kept.schedule == new.schedule
