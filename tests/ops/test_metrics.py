"""Prometheus metrics and /healthz: they move with the work, and health fails for real reasons."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from kzprobe.config import ServiceConfig, parse_config
from kzprobe.ops.notify import SystemdEnv
from kzprobe.service import Daemon
from kzprobe.targets import parse_target
from tests.servers import eventually, refused_port
from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config, interrupted, read_segments


def test_metrics_listen_defaults_to_loopback() -> None:
    """The default listen address is loopback, never all interfaces."""
    assert ServiceConfig().metrics_listen == "127.0.0.1:9108"
    assert parse_config({}).config.service.metrics_listen.startswith("127.0.0.1:")


@pytest.mark.parametrize("value", ["localhost:9108", "9108", "0.0.0.0", "[::1]"])
def test_metrics_listen_needs_an_ip_and_port(value: str) -> None:
    """Names (which would need a lookup) and missing ports are config errors."""
    from kzprobe.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics_listen"):
        parse_config({"service": {"metrics_listen": value}})


@pytest.mark.slow
async def test_metrics_move_with_measurements(tmp_path: Path, site: Site,
                                              start_daemon: StartDaemon) -> None:
    """Measurement, writer and sweep metrics rise as sweeps run; results add up to records."""
    urls = [site.url("/ok1"), site.url("/ok2"), f"http://127.0.0.1:{refused_port()}/"]
    config = daemon_config(tmp_path / "c.toml", urls=urls, out=tmp_path / "out",
                           limits={"rate": 2, "burst": 1, "concurrency": 2})
    daemon = await start_daemon(config)
    await daemon.wait_event("sweep_finished")
    for _ in range(50):  # the first sweep's records reach the writer a moment after its log
        first = await daemon.metrics()
        if first["kzprobe_bytes_written_total"] > 0:
            break
        await asyncio.sleep(0.1)
    swept = int(first["kzprobe_sweep_duration_seconds_count"])
    await daemon.wait_event("sweep_finished", count=swept + 2)
    # Counted when handed to the writer, written a moment later: read until they agree.
    for _ in range(50):
        second = await daemon.metrics()
        results = {k: v for k, v in second.items()
                   if k.startswith("kzprobe_measurements_total{")}
        if sum(results.values()) == second["kzprobe_records_written_total"]:
            break
        await asyncio.sleep(0.1)
    assert sum(results.values()) == second["kzprobe_records_written_total"] >= 9
    assert results["kzprobe_measurements_total{result=ok}"] >= 6
    assert second["kzprobe_bytes_written_total"] > first["kzprobe_bytes_written_total"] > 0
    assert second["kzprobe_rate_limit_waits_total"] > first["kzprobe_rate_limit_waits_total"]
    assert second["kzprobe_sweep_duration_seconds_count"] >= 3
    assert second["kzprobe_last_successful_sweep_timestamp_seconds"] >= time.time() - 10
    assert second["kzprobe_targets"] == 3 and second["kzprobe_writer_blocked"] == 0
    assert second["kzprobe_analysis_workers_started_total"] == 1  # started once, never again
    assert second["kzprobe_analysis_inline"] == 0
    for name in ("kzprobe_probes_in_flight", "kzprobe_queue_depth", "kzprobe_write_errors_total",
                 "kzprobe_segments_rotated_total", "kzprobe_control_failures_total",
                 "kzprobe_event_loop_lag_seconds", "process_open_fds"):
        assert name in second, name
    assert await daemon.get("/healthz") == (
        200, '{"status":"ok","problems":[],"details":{}}\n')
    assert (await daemon.get("/nothing"))[0] == 404
    assert await daemon.stop() == 0


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _daemon(tmp_path: Path, url: str, **kwargs: object) -> Daemon:
    config = parse_config({
        "analysis": {"not_bogon": ["127.0.0.0/8"], "retries": 0},
        "output": {"dir": str(tmp_path / "out")},
        "schedule": {"interval": kwargs.pop("interval", 60), "jitter": 0},
        "service": {"metrics_listen": "127.0.0.1:0"},
    }).config
    return Daemon(config, [parse_target(url)], **kwargs)  # type: ignore[arg-type]


async def _running(daemon: Daemon) -> asyncio.Task[int]:
    task = asyncio.create_task(daemon.serve(once=False))
    await eventually(lambda: daemon.metrics_address is not None or task.done())
    return task


class ThreadedNotifySocket:
    """A notify socket read by a thread, so datagrams are stamped when sent, even while the
    test's event loop (shared with an in-process daemon) is blocked."""

    def __init__(self) -> None:
        self.name = f"@kzprobe-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.05)
        self.pings: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings.append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


async def test_blocked_loop_fails_healthz_and_stops_watchdog_pings(
        tmp_path: Path, site: Site) -> None:
    """While the event loop is blocked, /healthz (a thread) says so and WATCHDOG=1 stops."""
    notify = ThreadedNotifySocket()
    systemd = SystemdEnv(notify_socket=notify.name, watchdog_usec=200_000)
    daemon = _daemon(tmp_path, site.url("/"), systemd=systemd, loop_stuck_after=1.0)
    task = await _running(daemon)
    try:
        await eventually(lambda: len(notify.pings) >= 2)
        url = f"http://{daemon.metrics_address}/healthz"
        seen: list[tuple[int, dict[str, object]]] = []
        def during_block() -> None:
            time.sleep(1.6)
            seen.append(_get(url))

        thread = threading.Thread(target=during_block)
        thread.start()
        blocked = time.monotonic()
        time.sleep(2.2)  # noqa: ASYNC251 - the point: a callback that blocks the event loop
        thread.join()
        status, body = seen[0]
        assert status == 503 and "event loop stuck" in str(body["problems"])
        assert [at for at in notify.pings if blocked + 0.05 < at < blocked + 2.2] == []
        resumed = time.monotonic()
        await asyncio.sleep(0.7)
        assert len([at for at in notify.pings if at > resumed]) >= 2
        assert (await asyncio.to_thread(_get, url))[0] == 200
    finally:
        daemon.request_stop(signal.SIGTERM)
        assert await task == 0
        notify.close()


async def test_healthz_fails_when_no_sweep_finished_in_two_intervals(
        tmp_path: Path, site: Site) -> None:
    """A sweep stuck longer than two intervals turns /healthz to 503 with the reason."""
    daemon = _daemon(tmp_path, site.url("/slow?s=30"), interval=2.0)
    task = await _running(daemon)
    url = f"http://{daemon.metrics_address}/healthz"
    assert (await asyncio.to_thread(_get, url))[0] == 200  # within the first two intervals
    deadline = asyncio.get_running_loop().time() + 15  # 4 s, plus room for a loaded machine
    while True:
        status, body = await asyncio.to_thread(_get, url)
        if status == 503 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 503 and "no sweep finished" in str(body["problems"])
    daemon.request_stop(signal.SIGTERM)
    daemon.request_stop(signal.SIGTERM)  # a second signal: do not wait for the slow page
    assert await task == 0


@pytest.mark.slow
async def test_taken_metrics_port_is_logged_and_measuring_goes_on(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """A metrics address already in use is an error in the log, not a daemon that will not run."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = daemon_config(tmp_path / "c.toml", urls=[site.url("/a")], out=tmp_path / "out",
                               service={"metrics_listen": f"127.0.0.1:{port}"})
        daemon = await start_daemon(config)
        failed = await daemon.wait_event("metrics_unavailable")
        assert failed["level"] == "error" and str(port) in failed["error"]
        await daemon.wait_event("sweep_finished", count=2)
        assert await daemon.stop() == 0


async def test_inline_judging_is_visible_in_metrics(tmp_path: Path, site: Site,
                                                    start_daemon: StartDaemon) -> None:
    """`[analysis] worker_process = false`: no worker started, the inline gauge says so,
    and records still carry their verdicts."""
    config = daemon_config(tmp_path / "c.toml", urls=[site.url("/ok1")], out=tmp_path / "out",
                           analysis={"worker_process": False})
    daemon = await start_daemon(config)
    await daemon.wait_event("sweep_finished")
    metrics = await daemon.metrics()
    assert await daemon.stop() == 0
    assert metrics["kzprobe_analysis_inline"] == 1
    assert metrics["kzprobe_analysis_workers_started_total"] == 0
    judged = [r for r in read_segments(tmp_path / "out") if not interrupted(r)]
    assert judged and all(r["test_keys"]["interference"] == [] and "blocking" in r["test_keys"]
                          and "x_analysis_failure" not in r["test_keys"] for r in judged)


async def test_metrics_on_every_address_is_logged_loudly_at_start(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """metrics_listen on 0.0.0.0: a warning in the log at start (unauthenticated metrics).

    The port is held by a socket that never listens, so nothing is exposed by the test."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("0.0.0.0", 0))
    try:
        listen = f"0.0.0.0:{holder.getsockname()[1]}"
        config = daemon_config(tmp_path / "c.toml", urls=[site.url("/a")], out=tmp_path / "out",
                               service={"metrics_listen": listen})
        daemon = await start_daemon(config)
        exposed = await daemon.wait_event("metrics_exposed")
        assert exposed["level"] == "warning" and exposed["listen"] == listen
        assert "every address" in exposed["reachable_on"]
        assert await daemon.stop() == 0
    finally:
        holder.close()
