"""`kzprobe run` as a real process under real signals: readiness, drain, interrupt, crash."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.servers import eventually
from tests.service.conftest import StartDaemon
from tests.service.harness import (
    NotifySocket,
    Site,
    daemon_config,
    interrupted,
    leftovers,
    read_segments,
)

pytestmark = pytest.mark.slow


async def test_systemd_notify_ready_status_watchdog_reloading_stopping(
        tmp_path: Path, site: Site, notify_socket: NotifySocket,
        start_daemon: StartDaemon) -> None:
    """READY=1 and STATUS= reach NOTIFY_SOCKET, WATCHDOG=1 each half period, RELOADING, STOPPING."""
    config = daemon_config(tmp_path / "c.toml", urls=[site.url("/a")], out=tmp_path / "out")
    daemon = await start_daemon(config, {"NOTIFY_SOCKET": notify_socket.name,
                                         "WATCHDOG_USEC": "400000"})
    await notify_socket.wait_for(lambda line: line == "READY=1")
    await notify_socket.wait_for(lambda line: line.startswith("STATUS=last sweep")
                                 and "records written" in line)
    since = time.monotonic()
    await asyncio.sleep(1.5)
    assert notify_socket.count("WATCHDOG=1", since) >= 5  # every 0.2 s
    daemon.signal(signal.SIGHUP)
    await notify_socket.wait_for(lambda line: line == "RELOADING=1")
    await daemon.wait_event("config_reloaded")
    assert await daemon.stop() == 0
    fields = notify_socket.fields()
    assert fields.count("READY=1") == 2  # start, and after the reload
    assert fields.index("RELOADING=1") < len(fields) - 1 - fields[::-1].index("READY=1")
    assert "STOPPING=1" in fields


async def test_sigterm_mid_sweep_finishes_in_flight_and_writes_each(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """SIGTERM mid-sweep: in-flight measurements finish, each one is written, exit 0, no .part."""
    out = tmp_path / "out"
    urls = [site.url(f"/slow?s=1&i={i}") for i in range(40)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           service={"shutdown_grace": 10})
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits() >= 7)
    started = time.monotonic()
    assert await daemon.stop(timeout=15) == 0
    assert time.monotonic() - started < 10
    records = read_segments(out)
    assert leftovers(out) == []
    assert len(records) == site.hits() < 40  # every request the site saw was recorded
    assert not any(interrupted(r) for r in records)
    assert sorted(r["input"] for r in records) == sorted(site.url(p) for p in site.seen)


async def test_sigterm_past_grace_records_the_rest_as_interrupted(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """Measurements still running when the grace ends are written with failure 'interrupted'."""
    out = tmp_path / "out"
    urls = [site.url(f"/slow?s=60&i={i}") for i in range(10)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           limits={"concurrency": 3}, service={"shutdown_grace": 1.5})
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits() >= 3)
    started = time.monotonic()
    assert await daemon.stop(timeout=15) == 0
    assert time.monotonic() - started < 1.5 + 3  # the grace, then a prompt close
    records = read_segments(out)
    assert leftovers(out) == []
    assert len(records) == site.hits() == 3
    assert all(interrupted(r) for r in records)


async def test_second_sigint_exits_at_once_with_intact_files(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """A second SIGINT skips the grace: exit quickly, in-flight work recorded as interrupted."""
    out = tmp_path / "out"
    urls = [site.url(f"/slow?s=60&i={i}") for i in range(10)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           limits={"concurrency": 3}, service={"shutdown_grace": 30})
    daemon = await start_daemon(config)
    await eventually(lambda: site.hits() >= 3)
    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    await daemon.wait_event("stop_requested")
    daemon.signal(signal.SIGINT)
    assert await daemon.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    records = read_segments(out)
    assert leftovers(out) == []
    assert len(records) == 3 and all(interrupted(r) for r in records)


async def test_kill_9_then_restart_leaves_no_corrupt_line(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """SIGKILL mid-write (plus a torn tail), restart: the .part is trimmed and published."""
    out = tmp_path / "out"
    urls = [site.url(f"/p?i={i}") for i in range(20)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           schedule={"interval": 0.05, "jitter": 0})
    first = await start_daemon(config)
    await eventually(lambda: site.hits() >= 60)
    await first.kill()
    parts = list(out.glob("*.part"))
    assert len(parts) == 1
    with parts[0].open("ab") as part:
        part.write(b'{"torn": "a record cut by the crash')
    second = await start_daemon(config)
    recovered = await second.wait_event("segments_recovered")
    assert recovered["count"] >= 1
    await eventually(lambda: site.hits() >= 100)
    assert await second.stop() == 0
    records = read_segments(out)  # fails on any corrupt or torn line
    assert leftovers(out) == []
    assert 60 <= len(records) <= site.hits()
    assert all(r["test_keys"]["requests"][0]["response"]["code"] == 200 for r in records)


def _worker_pids(daemon_pid: int) -> list[int]:
    """The daemon's child processes: its analysis worker (``python -m kzprobe.verdict.worker``)."""
    found = []
    for task in Path(f"/proc/{daemon_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"kzprobe.verdict.worker" in cmdline:
                found.append(int(child))
    return found


def _gone(pid: int) -> bool:
    """Exited (and reaped, or a zombie nobody will ever run again)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_analysis_worker_never_outlives_its_daemon(
        tmp_path: Path, site: Site, start_daemon: StartDaemon, how: str) -> None:
    """The worker ignores SIGTERM (the daemon drains first) and exits when its pipe closes:
    after a clean stop and after kill -9 of the daemon alike, no worker is left running."""
    config = daemon_config(tmp_path / "c.toml", urls=[site.url("/a")], out=tmp_path / "out")
    daemon = await start_daemon(config)
    await daemon.wait_event("sweep_finished")
    workers = _worker_pids(daemon.pid)
    assert len(workers) == 1
    if how == "sigterm":
        assert await daemon.stop() == 0
    else:
        await daemon.kill()
    await eventually(lambda: _gone(workers[0]), timeout=10)
