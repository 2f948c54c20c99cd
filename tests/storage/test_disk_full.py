"""Storage safety: a full disk pauses probing without losing a record; retention deletes
only the oldest closed segments."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kzprobe.config import OutputConfig
from kzprobe.storage.retention import PLAIN_GRACE_SECONDS, enforce
from tests.conftest import IN_CI
from tests.servers import eventually
from tests.service.conftest import StartDaemon
from tests.service.harness import NotifySocket, Site, daemon_config, leftovers, read_segments

TMPFS_BYTES = 1 << 20


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: ENOSPC for real. Needs root; skipped elsewhere, but never in CI."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755",
                             "kzprobe-test", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs: {result.stderr.strip() or result.returncode}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the filesystem with one file."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - leave
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * size)
    return filler


@pytest.mark.slow
async def test_disk_full_pauses_probing_and_resumes_without_losing_records(
        tmp_path: Path, tiny_disk: Path, site: Site, start_daemon: StartDaemon,
        notify_socket: NotifySocket) -> None:
    """ENOSPC: no crash, probing pauses, /healthz, metrics and STATUS say so; then all written."""
    out = tiny_disk / "results"
    urls = [site.url(f"/p?i={i}") for i in range(4)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           schedule={"interval": 0.2, "jitter": 0},
                           output={"rotate_bytes": 16384, "compress": "gzip"})
    out.mkdir()
    filler = _fill(tiny_disk, leave=24 * 1024)
    daemon = await start_daemon(config, {"NOTIFY_SOCKET": notify_socket.name})
    blocked = await daemon.wait_event("sink_blocked", timeout=30)
    assert blocked["error"].startswith("ENOSPC")
    status, body = await daemon.get("/healthz")
    assert status == 503 and "writer cannot write" in body
    metrics = await daemon.metrics()
    assert metrics["kzprobe_writer_blocked"] == 1 and metrics["kzprobe_write_errors_total"] >= 1
    await asyncio.sleep(0.5)  # measurements that had started before the block finish
    paused_at = site.hits()
    await asyncio.sleep(2.5)
    assert site.hits() == paused_at  # paused: nothing measured that cannot be stored
    await notify_socket.wait_for(lambda s: s.startswith("STATUS=PAUSED: cannot write (ENOSPC"))
    filler.unlink()
    await daemon.wait_event("sink_resumed", timeout=15)
    await eventually(lambda: site.hits() >= paused_at + 12)
    assert (await daemon.get("/healthz"))[0] == 200
    assert await daemon.stop() == 0
    records = read_segments(out)
    assert leftovers(out) == []
    assert len(records) == site.hits()  # every measurement made was written
    assert sorted(r["input"] for r in records) == sorted(site.url(p) for p in site.seen)


def _segment(directory: Path, stamp: str, suffix: str, size: int, age_days: float,
             prefix: str = "kz") -> Path:
    path = directory / f"{prefix}-{stamp}-host-1-000001{suffix}"
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * 86400
    os.utime(path, (when, when))
    return path


def _output(directory: Path, **kwargs: object) -> OutputConfig:
    return OutputConfig(dir=directory, prefix="kz", **kwargs)  # type: ignore[arg-type]


def test_retention_by_total_size_deletes_oldest_closed_first(tmp_path: Path) -> None:
    """Above max_total_bytes the oldest closed segments go; the open .part never does."""
    old = _segment(tmp_path, "20260101T000000Z", ".ndjson.gz", 400, 3)
    mid = _segment(tmp_path, "20260102T000000Z", ".ndjson.zst", 400, 2)
    new = _segment(tmp_path, "20260103T000000Z", ".ndjson.gz", 400, 1)
    part = _segment(tmp_path, "20260104T000000Z", ".ndjson.part", 400, 0)
    other = _segment(tmp_path, "20260101T000000Z", ".ndjson.gz", 400, 9, prefix="kz-b")
    kept = enforce(_output(tmp_path, max_total_bytes=900), time.time())
    assert kept.deleted == (old, mid) and kept.freed_bytes == 800 and kept.remaining_bytes == 800
    assert new.exists() and part.exists() and other.exists()


def test_retention_by_age_and_plain_segments_waiting_for_compression(tmp_path: Path) -> None:
    """max_age_days deletes old closed segments, but a fresh plain one may be mid-compression."""
    ancient = _segment(tmp_path, "20250101T000000Z", ".ndjson.gz", 10, 40)
    fresh_plain = _segment(tmp_path, "20250102T000000Z", ".ndjson", 10, 0)
    stale_plain = _segment(tmp_path, "20250103T000000Z", ".ndjson", 10, 31)
    recent = _segment(tmp_path, "20250104T000000Z", ".ndjson.gz", 10, 1)
    tmp = _segment(tmp_path, "20250104T000000Z", ".ndjson.gz.tmp", 10, 60)
    kept = enforce(_output(tmp_path, max_age_days=30), time.time())
    assert set(kept.deleted) == {ancient, stale_plain}
    assert fresh_plain.exists() and recent.exists() and tmp.exists()
    size_only = enforce(_output(tmp_path, max_total_bytes=1), time.time())
    assert fresh_plain not in size_only.deleted and not recent.exists()
    assert PLAIN_GRACE_SECONDS >= 60


def test_retention_is_off_by_default(tmp_path: Path) -> None:
    """Without limits nothing is deleted, however old or large."""
    seg = _segment(tmp_path, "20200101T000000Z", ".ndjson.gz", 10_000, 3650)
    assert enforce(_output(tmp_path), time.time()).deleted == ()
    assert seg.exists()


def test_retention_keys_parse_with_zero_as_off() -> None:
    """output.max_total_bytes / max_age_days: positive limits, 0 or absent for off."""
    from kzprobe.config import parse_config
    from kzprobe.errors import ConfigError

    out = parse_config({"output": {"max_total_bytes": 5_000_000, "max_age_days": 0}}).config.output
    assert (out.max_total_bytes, out.max_age_days) == (5_000_000, None)
    assert parse_config({}).config.output.max_total_bytes is None
    with pytest.raises(ConfigError, match="max_age_days"):
        parse_config({"output": {"max_age_days": -1}})


@pytest.mark.slow
async def test_daemon_applies_retention_while_running(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """With max_total_bytes set, each pass deletes the oldest closed segments down to the limit."""
    out = tmp_path / "out"
    config = daemon_config(tmp_path / "c.toml", urls=[site.url(f"/p?i={i}") for i in range(5)],
                           out=out, schedule={"interval": 0.1, "jitter": 0},
                           output={"rotate_bytes": 4096, "compress": "none",
                                   "max_total_bytes": 20_000})
    daemon = await start_daemon(config)
    await daemon.wait_event("retention_deleted", count=3)
    metrics = await daemon.metrics()
    assert await daemon.stop() == 0
    passes = daemon.events("retention_deleted")
    assert all(event["remaining_bytes"] <= 20_000 for event in passes)
    assert metrics["kzprobe_retention_deleted_segments_total"] >= 3
    assert metrics["kzprobe_bytes_written_total"] > 2 * 20_000  # so there was work to do
    survivors = sorted(p.name for p in out.glob("kz*"))
    assert survivors and all(name > passes[-1]["newest"] for name in survivors)


@pytest.mark.slow
async def test_stop_while_the_disk_stays_full_exits_3_and_says_how_many_were_lost(
        tmp_path: Path, tiny_disk: Path, site: Site, start_daemon: StartDaemon,
        notify_socket: NotifySocket) -> None:
    """Stopped while records cannot be written: they are lost, and the exit code (3, not 0),
    the log and the unit's STATUS say so, with the count."""
    out = tiny_disk / "results"
    urls = [site.url(f"/p?i={i}") for i in range(4)]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=out,
                           schedule={"interval": 0.2, "jitter": 0},
                           output={"rotate_bytes": 16384, "compress": "gzip"})
    out.mkdir()
    _fill(tiny_disk, leave=24 * 1024)
    daemon = await start_daemon(config, {"NOTIFY_SOCKET": notify_socket.name})
    await daemon.wait_event("sink_blocked", timeout=30)
    await eventually(lambda: site.hits() >= 4)  # some records wait for the disk
    daemon.signal(signal.SIGTERM)
    await daemon.wait_event("stop_requested")
    daemon.signal(signal.SIGTERM)  # a second signal: give up on the disk within seconds
    assert await daemon.wait(timeout=30) == 3
    lost = (await daemon.wait_event("sink_records_lost"))["lost"]
    assert lost > 0
    stopped = daemon.events("stopped")[-1]
    assert stopped["level"] == "error" and stopped["records_lost"] == lost
    status = await notify_socket.wait_for(lambda s: s.startswith("STATUS=STOPPED:"))
    assert f"{lost} records lost" in status
