"""``kzprobe run`` with ``[upload]`` as a real process: records written, scrubbed and
submitted; kill -9 mid-upload and a restart lose nothing; off unless configured."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kzprobe.storage.segments import iter_records
from kzprobe.upload.outbox import OUTBOX_FILE
from kzprobe.upload.uploader import Uploader, uploadable
from tests.service.harness import KZPROBE, DaemonProcess, daemon_config
from tests.upload.collector_server import CollectorServer
from tests.upload.helpers import PUBLIC_IP, config, until

MAX_IN_FLIGHT = 2


class OnceProcess(DaemonProcess):
    """``kzprobe run --once``: one sweep, flush, upload for a few seconds, exit."""

    async def start(self) -> DaemonProcess:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *KZPROBE, "run", "--once", "--config", str(self.config),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err, env=self.env)
        return self


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[list[DaemonProcess]]:
    """Daemon processes that never outlive the test."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        await daemon.kill()


async def start_daemon(started: list[DaemonProcess], cfg: Path, log: Path) -> DaemonProcess:
    daemon = await DaemonProcess(cfg, log).start()
    started.append(daemon)
    return daemon


@pytest.fixture
async def collector() -> AsyncIterator[CollectorServer]:
    server = await CollectorServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def echo_site() -> AsyncIterator[str]:
    """A site that tells the client its (public) address, in a header and in the page."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"<html><body>Your IP address is {PUBLIC_IP}</body></html>",
                            content_type="text/html", headers={"X-Client-IP": PUBLIC_IP})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def write_config(tmp_path: Path, site: str, out: Path, collector: CollectorServer | None,
                 **extra: Any) -> Path:
    sections: dict[str, Any] = {
        "probe": {"public_ip": [PUBLIC_IP], "cc": "KZ", "asn": "AS9198"},
        "output": {"dir": out, "store_bodies": "always", "rotate_seconds": 1.0},
        **extra}
    if collector is not None:
        sections["upload"] = {"ooni_collector": collector.url, "max_backoff": 1.0,
                              "max_in_flight": MAX_IN_FLIGHT}
    return daemon_config(tmp_path / "kzprobe.toml", out=out,
                         urls=[f"{site}/page{i}" for i in range(4)], **sections)


def written(out: Path) -> list[dict[str, Any]]:
    """The records on disk that the uploader must send."""
    return [r for r in iter_records([out]) if uploadable(r)]


async def run_once(tmp_path: Path, cfg: Path, name: str) -> DaemonProcess:
    daemon = await OnceProcess(cfg, tmp_path / f"{name}.log").start()
    try:
        assert await daemon.wait(90) == 0, daemon.stderr()
    finally:
        await daemon.kill()
    return daemon


async def test_run_once_submits_scrubbed_records(tmp_path: Path, collector: CollectorServer,
                                                 echo_site: str) -> None:
    out = tmp_path / "out"
    await run_once(tmp_path, write_config(tmp_path, echo_site, out, collector), "once")
    records = written(out)
    assert len(records) == 4
    on_disk = b"".join(p.read_bytes() for p in out.glob("kzprobe-*.ndjson"))
    assert b"[scrubbed]" in on_disk or any("[scrubbed]" in str(r) for r in records)
    assert Counter(collector.uids()) == Counter(r["x_measurement_uid"] for r in records)
    assert collector.violations == []
    assert collector.bodies and all(PUBLIC_IP.encode() not in b for b in collector.bodies)
    assert {m["probe_cc"] for m in collector.measurements} == {"KZ"}
    assert all(m["report_id"] in collector.reports for m in collector.measurements)


async def test_off_unless_configured(tmp_path: Path, collector: CollectorServer,
                                     echo_site: str) -> None:
    """Without [upload], a run sends the collector nothing and keeps no upload cursor."""
    out = tmp_path / "out"
    await run_once(tmp_path, write_config(tmp_path, echo_site, out, None), "off")
    assert len(written(out)) == 4
    assert collector.times == [] and collector.bodies == []
    assert not (out / OUTBOX_FILE).exists()


async def test_kill_9_mid_upload_loses_nothing(tmp_path: Path, collector: CollectorServer,
                                               echo_site: str,
                                               daemons: list[DaemonProcess]) -> None:
    """SIGKILL while records are in flight and queued; the next start resumes from the saved
    cursor. At least once: every record arrives, a few may arrive twice (those in flight or
    finished after the last cursor save), none more often."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path, echo_site, out, collector)
    collector.delay = 0.2  # slower than the sweeps: a backlog builds up
    first = await start_daemon(daemons, cfg, tmp_path / "first.log")
    await until(lambda: len(collector.measurements) >= 24, timeout=90, what="first uploads")
    assert collector.measurements  # in flight now: kill
    first.signal(signal.SIGKILL)
    await first.wait(10)
    before_restart = len(collector.measurements)

    second = await start_daemon(daemons, cfg, tmp_path / "second.log")
    await until(lambda: len(collector.measurements) > before_restart + 4, timeout=90,
                what="uploads after the restart")
    samples = await second.metrics()
    assert samples['kzprobe_upload_total{result=submitted}'] > 0
    assert "kzprobe_upload_pending" in samples
    assert await second.stop() == 0
    collector.delay = 0.0
    rest = Uploader(config(out, collector.url))  # a third start sends what the second left
    await rest.start()
    assert await rest.drain(60)
    await rest.aclose(timeout=5)

    records = written(out)
    sent = Counter(collector.uids())
    missing = {r["x_measurement_uid"] for r in records} - set(sent)
    assert not missing, f"{len(missing)} of {len(records)} records never arrived"
    duplicates = sum(n - 1 for n in sent.values())
    assert max(sent.values()) <= 2 and duplicates <= 4 * MAX_IN_FLIGHT, sent.most_common(3)
    assert collector.violations == []


async def test_records_of_a_run_while_the_collector_was_down_arrive_with_the_next(
        tmp_path: Path, collector: CollectorServer, echo_site: str) -> None:
    """A run that could not reach the collector exits cleanly (its upload gets a few seconds)
    and keeps its records; the next run sends them late, with its own."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path, echo_site, out, collector)
    await collector.stop()
    await run_once(tmp_path, cfg, "down")
    first = {r["x_measurement_uid"] for r in written(out)}
    assert len(first) == 4 and collector.measurements == []
    await collector.start()
    await run_once(tmp_path, cfg, "up")
    everything = {r["x_measurement_uid"] for r in written(out)}
    assert len(everything) == 8
    assert Counter(collector.uids()) == Counter(everything)
    assert collector.violations == []
