"""What the daemon tells the outside: systemd notifications, metrics and ``/healthz``.

:class:`Running` holds what the daemon runs now (config, targets, engine), swapped as one
when a reload applies. :class:`Readings` reads it, the writer and the sweep progress to
tell systemd (READY/STATUS/WATCHDOG/RELOADING/STOPPING), Prometheus and ``/healthz``.
The scrape and ``/healthz`` are answered from the metrics thread, so a stuck event loop
is still reported; :func:`heartbeat` is the WATCHDOG beat the helper shares.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog

from kzprobe.alerts.reading import AlertReading
from kzprobe.config import DEFAULT_GROUP, Config, metrics_exposure
from kzprobe.engine import Engine, SweepSummary
from kzprobe.errors import KzprobeError
from kzprobe.ops.health import HealthInputs, LoopWatch, problems
from kzprobe.ops.metrics import Metrics, MetricsServer, Reading
from kzprobe.ops.notify import Notifier, SystemdEnv
from kzprobe.storage.sink import NdjsonSink
from kzprobe.targets import Target

log = structlog.get_logger("kzprobe.ops.readings")

STATUS_EVERY = 5.0  # seconds between STATUS= refreshes (sent only when changed)


class Running:
    """The config, targets and engine the daemon runs now; a reload replaces all three."""

    def __init__(self, config: Config, targets: list[Target]) -> None:
        self.config = config
        self.targets = list(targets)
        self.engine: Engine | None = None
        self._swap = threading.Lock()  # engine swaps vs. the metrics thread's reads
        self._retired_waits = 0
        self._retired_workers = 0  # analysis workers started by engines replaced on reload

    def set_engine(self, engine: Engine) -> None:
        """Run ``engine`` from now on, keeping the counters of the one it replaces."""
        with self._swap:
            if self.engine is not None:
                self._retired_waits += self.engine.bucket.waits
                judge = self.engine.pipeline.judge
                self._retired_workers += judge.started if judge is not None else 0
            self.engine = engine

    def counters(self) -> tuple[Engine | None, int, int]:
        """The engine, and rate-limit waits and workers of the retired ones (any thread)."""
        with self._swap:
            return self.engine, self._retired_waits, self._retired_workers


class Readings:
    """Status, metrics and health of one daemon, and the systemd notifications carrying them."""

    def __init__(self, running: Running, sink: NdjsonSink, stop_requested: asyncio.Event,
                 systemd: SystemdEnv, *, loop_stuck_after: float,
                 alerts: Callable[[], AlertReading] | None = None) -> None:
        self.running = running
        self.sink = sink
        self.stop_requested = stop_requested
        self.systemd = systemd
        self.notifier = Notifier(systemd.notify_socket)
        self.loop_watch = LoopWatch()
        self.loop_stuck_after = loop_stuck_after
        self.metrics = Metrics(self.reading, alerts)
        self.metrics_address: str | None = None
        self._server: MetricsServer | None = None
        self._started = time.monotonic()
        self._last_sweep_end: float | None = None  # monotonic, complete sweeps only
        # Notes for /healthz "details" (replaced whole, so the metrics thread reads a
        # consistent dict): why a group's schedule is stretched, say.
        self.notes: dict[str, str] = {}
        self._group_ends: dict[str, float] = {}  # group -> its last complete sweep (monotonic)
        # group -> its next sweep at the earliest (monotonic) while the daily budget holds it
        # back: health judges its wait by that, not by its configured interval (replaced whole)
        self.held_until: dict[str, float] = {}
        self._last_sweep_wall: float | None = None
        self._last_summary: SweepSummary | None = None

    # -- systemd

    def ready(self) -> None:
        self.notifier.send("READY=1", f"STATUS={self.status()}")

    def reloading(self) -> None:
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1")

    def refresh_status(self) -> None:
        self.notifier.status(self.status())

    async def heartbeat(self) -> None:
        await heartbeat(self.notifier, self.systemd, self.status)

    # -- the sweeps

    def sweep_finished(self, summary: SweepSummary, *, complete: bool) -> None:
        """Remember a sweep for status and health; a complete one also for the metrics."""
        self._last_summary = summary
        if complete:
            self._last_sweep_end, self._last_sweep_wall = time.monotonic(), time.time()
            self._group_ends[summary.group] = self._last_sweep_end
            self.metrics.group_last_sweep.labels(summary.group).set(self._last_sweep_wall)
            self.metrics.sweep_duration.observe(summary.duration)
            self.metrics.last_sweep.set(self._last_sweep_wall)

    def note(self, key: str, text: str | None) -> None:
        """Set (or with None, clear) one of the notes ``/healthz`` shows under details."""
        notes = {k: v for k, v in self.notes.items() if k != key}
        self.notes = notes if text is None else {**notes, key: text}

    def status(self) -> str:
        stats = self.sink.stats
        written = f"{stats.records_written} records written"
        if stats.records_lost:
            return (f"STOPPED: {stats.records_lost} records lost, could not write "
                    f"({stats.last_error}); {written}")
        if self.stop_requested.is_set():
            return f"stopping: finishing measurements in flight; {written}"
        if stats.blocked:
            return f"PAUSED: cannot write ({stats.last_error}), retrying; {written}"
        summary = self._last_summary
        if summary is None or self._last_sweep_wall is None:
            return f"first sweep running; {written}"
        return (f"last sweep {_utc(self._last_sweep_wall)}: {summary.measured}/"
                f"{summary.targets} measured in {summary.duration:.0f} s; {written}")

    # -- metrics and /healthz (read from the metrics thread)

    def reading(self) -> Reading:
        """Counters for a scrape (called from the metrics thread)."""
        stats = self.sink.stats
        engine, retired, workers = self.running.counters()
        judge = engine.pipeline.judge if engine else None
        return Reading(
            in_flight=engine.in_flight if engine else 0,
            queue_depth=engine.queue_depth if engine else 0,
            rate_limit_waits=retired + (engine.bucket.waits if engine else 0),
            records_written=stats.records_written,
            bytes_written=stats.bytes_written,
            write_errors=stats.write_errors,
            segments_rotated=stats.segments_rotated,
            segments_compressed=stats.segments_compressed,
            writer_blocked=stats.blocked,
            targets=len(self.running.targets),
            loop_lag=self.loop_watch.current_lag(),
            loop_lag_max=self.loop_watch.max_lag,
            analysis_workers_started=workers + (judge.started if judge else 0),
            analysis_inline=engine is None or not engine.pipeline.judging_in_worker,
        )

    def health_problems(self) -> list[str]:
        """What ``/healthz`` reports (called from the metrics thread)."""
        since, interval = self._most_overdue()
        return problems(HealthInputs(
            loop_lag=self.loop_watch.current_lag(),
            writer_blocked=self.sink.stats.blocked,
            writer_error=self.sink.stats.last_error,
            seconds_since_sweep=since,
            sweep_interval=interval,
        ), stuck_after=self.loop_stuck_after)

    def _most_overdue(self) -> tuple[float, float]:
        """(seconds since its last complete sweep, interval) of the group most behind its
        schedule: a stuck default sweep is noticed while a watchlist keeps sweeping."""
        now, config = time.monotonic(), self.running.config
        intervals = {DEFAULT_GROUP: config.schedule.interval,
                     **{g.name: g.interval for g in config.targets.groups}}
        names = {t.group for t in self.running.targets} or {DEFAULT_GROUP}
        ends, held = {n: self._group_ends.get(n, self._started) for n in names}, self.held_until
        return max(((now - ends[name], max(intervals[name], held.get(name, 0.0) - ends[name]))
                    for name in names if name in intervals),
                   key=lambda pair: pair[0] / pair[1],
                   default=(now - (self._last_sweep_end or self._started),
                            config.schedule.interval))

    def start_server(self) -> None:
        """Serve ``/metrics`` and ``/healthz`` if configured; a failure is logged, not fatal."""
        listen = self.running.config.service.metrics_listen
        if not listen:
            return
        exposure = metrics_exposure(listen)
        if exposure:  # check-config warns too (an error under --strict)
            log.warning("metrics_exposed", listen=listen, reachable_on=exposure,
                        note="metrics and /healthz have no authentication")
        server = MetricsServer(self.metrics.registry, self.health_problems,
                               lambda: self.notes)
        try:
            self.metrics_address = server.start(listen)
        except KzprobeError as exc:  # measuring matters more than being watched: go on
            log.error("metrics_unavailable", error=str(exc))
            return
        self._server = server
        log.info("metrics_listening", address=self.metrics_address)

    async def stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            async with asyncio.timeout(5.0):
                await asyncio.to_thread(server.close)


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


async def heartbeat(notifier: Notifier, systemd: SystemdEnv, status: Callable[[], str]) -> None:
    """WATCHDOG=1 from the loop itself (a blocked loop stops it) and STATUS refreshes."""
    period = min(STATUS_EVERY, systemd.watchdog_interval or STATUS_EVERY)
    while True:
        if systemd.watchdog_interval is not None:
            notifier.send("WATCHDOG=1")
        notifier.status(status())
        await asyncio.sleep(period)
