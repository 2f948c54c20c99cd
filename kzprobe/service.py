"""The service: the one owner of the event loop and of signals.

``run_loop`` is the only place an event loop is created (uvloop when available).
:class:`Daemon` is ``kzprobe run``: sweeps on a schedule, writes through the one
writer, stops in a fixed order (stop starting, let in-flight finish within the grace
period, interrupt the rest with a record each, drain the writer, close files).
SIGHUP reloads the config file and target lists; a new config takes effect at the next
sweep, so no measurement in flight is dropped, and a broken one is logged and ignored.
Around the loop: systemd notifications (READY/STATUS/WATCHDOG/RELOADING/STOPPING),
Prometheus metrics and ``/healthz`` from a thread, event-loop lag, retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import random
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson
import structlog

from kzprobe.config import Config, load_config, metrics_exposure
from kzprobe.engine import Engine, SweepSummary, build_engine, raise_nofile_limit
from kzprobe.errors import KzprobeError
from kzprobe.ops.health import HealthInputs, LoopWatch, problems
from kzprobe.ops.metrics import Metrics, MetricsServer, Reading
from kzprobe.ops.notify import Notifier, SystemdEnv
from kzprobe.storage import retention
from kzprobe.storage.sink import NdjsonSink
from kzprobe.targets import Target, load_targets, parse_target

T = TypeVar("T")
log = structlog.get_logger("kzprobe.service")

CLOSE_TIMEOUT = 15.0  # seconds the writer gets to drain and close at shutdown
FORCED_CLOSE_TIMEOUT = 2.0  # ... after a second stop signal
RELOAD_TIMEOUT = 60.0  # reading and parsing the config and target lists on SIGHUP
RETENTION_EVERY = 60.0  # seconds between retention passes (also after every sweep)
STATUS_EVERY = 5.0  # seconds between STATUS= refreshes (sent only when changed)
EXIT_RECORDS_LOST = 3  # stopped, but accepted records could not be written (disk full)
# Output settings bound to the open writer: a reload logs that they need a restart.
RESTART_ONLY_OUTPUT = ("dir", "prefix", "rotate_bytes", "rotate_seconds", "compress",
                       "fsync_interval")

# Python's cyclic GC runs a young collection every 700 container allocations (net) and,
# now and then, one over everything alive. A measurement allocates thousands of dicts and
# lists that plain reference counting frees; at 5,000 measurements in flight the default
# spent 8 of 20 CPU seconds in the collector, with 0.3 s pauses (benchmark 2). Collecting
# less often changes neither what is freed nor when, except for reference cycles.
GC_THRESHOLDS = (50_000, 20, 20)
# How long a thread waiting for the GIL lets the running one go on (CPython's default is
# 5 ms). The sink's writer thread gives the GIL up for every compress, write and fsync;
# while the event loop is busy, each return waited up to a full interval, so the writer
# ran at a fraction of its speed (benchmark 3: 0.67x the plain writer at 5 ms, 0.84x at
# 1 ms). Threads that do not wait for the GIL pay nothing for a shorter interval.
SWITCH_INTERVAL = 0.001


def run_loop(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on a fresh loop (uvloop if installed); the only loop kzprobe creates."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def warn_if_public_ip_unknown(config: Config) -> None:
    """Say at start that records may keep the probe's address until a helper reports it."""
    if not config.probe.public_ip:
        log.warning("public_ip_unknown",
                    consequence="records are scrubbed only of addresses kzprobe helpers "
                                "report; one measured before the first helper answer keeps "
                                "the probe's address",
                    fix="set [probe] public_ip")


async def measure_urls(config: Config, urls: list[str], out: TextIO = sys.stdout) -> int:
    """``kzprobe measure``: measure each URL now, print records in input order."""
    targets = [parse_target(url, origin=f"argv[{i}]") for i, url in enumerate(urls)]
    raise_nofile_limit()
    warn_if_public_ip_unknown(config)
    engine = build_engine(config)
    await engine.start()
    gate = asyncio.Semaphore(config.limits.concurrency)

    async def one(target: Target) -> dict[str, Any]:
        async with gate:
            return await engine.measure(target)

    try:
        tasks = [asyncio.ensure_future(one(t)) for t in targets]
        for task in tasks:
            record = await task
            out.write(orjson.dumps(record).decode() + "\n")
            out.flush()
    finally:
        await engine.aclose()
    return 0


async def blocking_io(call: Callable[[], T]) -> T:
    """``call()`` in a daemon thread of its own, awaited.

    For file reads that may block in the kernel (an open() on a hung network file system):
    asyncio.to_thread's pool is joined when the loop closes, so one stuck thread would keep
    a stopped daemon from exiting. A daemon thread is abandoned at exit instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the waiter gave up (timeout, shutdown)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # handed to the waiter
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=work, name="kzprobe-blocking-io", daemon=True).start()
    return await future


@dataclass(frozen=True, slots=True)
class Inputs:
    """A parsed config and its targets: what ``kzprobe run`` starts from or reloads."""

    config: Config
    targets: tuple[Target, ...]
    warnings: tuple[str, ...]


def load_inputs(path: Path) -> Inputs:
    """Read the config file and its target lists (blocking; raises KzprobeError)."""
    loaded = load_config(path)
    targets, target_warnings = daemon_targets(loaded.config)
    if not targets:
        raise KzprobeError(f"{path}: no usable targets")
    return Inputs(loaded.config, tuple(targets), (*loaded.warnings, *target_warnings))


@dataclass(frozen=True, slots=True)
class _Pending:
    """A reloaded config waiting for the next sweep, with its engine built."""

    config: Config
    targets: tuple[Target, ...]
    engine: Engine


def _with_probe_id(config: Config, probe_id: str | None) -> Config:
    """``config`` naming the probe as its segment files do (the stored id by default)."""
    return dataclasses.replace(config, probe=dataclasses.replace(config.probe, id=probe_id))


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


class Daemon:
    """``kzprobe run``: continuous (or ``--once``) sweeps into rotating NDJSON."""

    def __init__(self, config: Config, targets: list[Target], *,
                 on_record: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                 systemd: SystemdEnv | None = None, loop_stuck_after: float = 10.0) -> None:
        self.config = config
        self.targets = list(targets)
        self.on_record = on_record
        self.sink = NdjsonSink(config.output, probe_id=config.probe.id)
        self.stop_requested = asyncio.Event()
        self.force_exit = False
        self.systemd = systemd or SystemdEnv()
        self.notifier = Notifier(self.systemd.notify_socket)
        self.loop_watch = LoopWatch()
        self.loop_stuck_after = loop_stuck_after
        self.metrics = Metrics(self._reading)
        self.metrics_address: str | None = None
        self._server: MetricsServer | None = None
        self._engine: Engine | None = None
        self._swap = threading.Lock()  # engine swaps vs. the metrics thread's reads
        self._retired_waits = 0
        self._retired_workers = 0  # analysis workers started by engines replaced on reload
        self._signals = 0
        self._pending: _Pending | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._wake = asyncio.Event()  # the idle wait between sweeps: stop, or a reload
        self._background: list[asyncio.Task[None]] = []
        self._started = time.monotonic()
        self._last_sweep_end: float | None = None  # monotonic, complete sweeps only
        self._last_sweep_wall: float | None = None
        self._last_summary: SweepSummary | None = None

    # -- signals

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """First signal: drain. A second one: interrupt in-flight measurements now."""
        self._signals += 1
        if self._signals > 1:
            self.force_exit = True
            if self._engine is not None:
                self._engine.interrupt()
        log.info("stop_requested", signal=signal.Signals(signum).name, forced=self.force_exit)
        self.notifier.send("STOPPING=1")
        self.stop_requested.set()
        self._wake.set()
        if self._engine is not None:
            self._engine.stop()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and target lists in the background."""
        if self.config.source is None:
            log.warning("config_reload_unavailable", reason="not started from a config file")
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True  # a reload is running: read the files once more after it
            return
        self._reload_task = asyncio.create_task(self._reload(), name="kzprobe-reload")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    # -- lifecycle

    async def serve(self, *, once: bool) -> int:
        """Run until stopped (or one sweep with ``once``); return the exit code."""
        raise_nofile_limit()
        self._install_signals()
        try:
            recovered = await self.sink.start()
        except BaseException:
            self._remove_signals()
            raise
        if recovered:
            log.info("segments_recovered", count=len(recovered))
        self.config = _with_probe_id(self.config, self.sink.probe_id)
        try:
            await self._start(once=once)
            await self._loop(once=once)
        finally:
            await self._shutdown()
        stats = self.sink.stats
        if stats.records_lost:  # systemd and scripts must see it: not a clean stop
            log.error("stopped", records=stats.records_written, records_lost=stats.records_lost,
                      error=stats.last_error, exit_code=EXIT_RECORDS_LOST)
            return EXIT_RECORDS_LOST
        log.info("stopped", records=stats.records_written)
        return 0

    async def _start(self, *, once: bool) -> None:
        warn_if_public_ip_unknown(self.config)
        engine = self._new_engine(self.config)
        await engine.start()
        self._set_engine(engine)
        if not once:
            self._start_metrics()
        self._background = [asyncio.create_task(coro, name=name) for name, coro in (
            ("kzprobe-loopwatch", self.loop_watch.run()),
            ("kzprobe-heartbeat", self._heartbeat()),
            ("kzprobe-retention", self._retention_timer()),
        )]
        gc.freeze()  # start-up objects (modules, targets, fingerprints) live for the run:
        # keep them out of every later collection
        self.notifier.send("READY=1", f"STATUS={self._status()}")
        log.info("daemon_ready", targets=len(self.targets), metrics=self.metrics_address,
                 watchdog_s=self.systemd.watchdog_interval, notify=self.notifier.enabled)

    async def _shutdown(self) -> None:
        tasks = [*self._background, *([self._reload_task] if self._reload_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pending, self._pending = self._pending, None
        for engine in (self._engine, pending.engine if pending else None):
            if engine is not None:
                await engine.aclose()
        timeout = FORCED_CLOSE_TIMEOUT if self.force_exit else CLOSE_TIMEOUT
        await self.sink.aclose(timeout=timeout)
        if self.sink.stats.records_lost:
            self.notifier.send(f"STATUS={self._status()}")
        self._remove_signals()
        await self._stop_metrics()
        self.notifier.close()

    def _start_metrics(self) -> None:
        listen = self.config.service.metrics_listen
        if not listen:
            return
        exposure = metrics_exposure(listen)
        if exposure:  # check-config warns too (an error under --strict)
            log.warning("metrics_exposed", listen=listen, reachable_on=exposure,
                        note="metrics and /healthz have no authentication")
        server = MetricsServer(self.metrics.registry, self.health_problems)
        try:
            self.metrics_address = server.start(listen)
        except KzprobeError as exc:  # measuring matters more than being watched: go on
            log.error("metrics_unavailable", error=str(exc))
            return
        self._server = server
        log.info("metrics_listening", address=self.metrics_address)

    async def _stop_metrics(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            async with asyncio.timeout(5.0):
                await asyncio.to_thread(server.close)

    # -- engines and reloads

    def _new_engine(self, config: Config) -> Engine:
        return build_engine(config, self._emit, wait_writable=self._wait_writable)

    def _set_engine(self, engine: Engine) -> None:
        with self._swap:
            if self._engine is not None:
                self._retired_waits += self._engine.bucket.waits
                judge = self._engine.pipeline.judge
                self._retired_workers += judge.started if judge is not None else 0
            self._engine = engine

    async def _reload(self) -> None:
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")
        try:
            while True:
                self._reload_again = False
                await self._reload_once()
                if not self._reload_again:
                    return
        finally:
            self.notifier.send("READY=1", f"STATUS={self._status()}")

    async def _reload_once(self) -> None:
        path = self.config.source
        assert path is not None
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                inputs = await blocking_io(lambda: load_inputs(path))
            config = self._restartless(inputs.config)
            engine = self._new_engine(config)
            await engine.start()
        except Exception as exc:  # any bad config keeps the running one
            self.metrics.reloads.labels("failure").inc()
            log.error("config_reload_failed", path=str(path), error=str(exc) or repr(exc),
                      kept="the running config")
            return
        for warning in inputs.warnings:
            log.warning("config_warning", warning=warning)
        await self._set_pending(_Pending(config, inputs.targets, engine))
        self.metrics.reloads.labels("success").inc()
        log.info("config_reloaded", path=str(path), targets=len(inputs.targets),
                 applies="at the next sweep")

    async def _set_pending(self, pending: _Pending) -> None:
        old, self._pending = self._pending, pending
        self._wake.set()  # a sleeping loop recomputes its wait with the new interval
        if old is not None:
            await old.engine.aclose()

    def _restartless(self, new: Config) -> Config:
        """``new``, but keeping the running values of settings that need a restart."""
        old = self.config
        changed = [f"output.{k}" for k in RESTART_ONLY_OUTPUT
                   if getattr(new.output, k) != getattr(old.output, k)]
        if new.service.metrics_listen != old.service.metrics_listen:
            changed.append("service.metrics_listen")
        if new.probe.id not in (None, old.probe.id):
            changed.append("probe.id")
        if changed:
            log.warning("config_reload_needs_restart", keys=changed, kept="running values")
        output = dataclasses.replace(
            new.output, **{k: getattr(old.output, k) for k in RESTART_ONLY_OUTPUT})
        service = dataclasses.replace(new.service, metrics_listen=old.service.metrics_listen)
        return dataclasses.replace(_with_probe_id(new, old.probe.id), output=output,
                                   service=service)

    async def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        old = self._engine
        self.config, self.targets = pending.config, list(pending.targets)
        if old is not None:
            pending.engine.pipeline.scrubber.adopt(old.pipeline.scrubber)
        self._set_engine(pending.engine)
        if old is not None:
            await old.aclose()
        log.info("config_applied", targets=len(self.targets))

    # -- records

    async def _emit(self, record: dict[str, Any]) -> None:
        await self.sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.metrics.observe(record)
        if self.on_record is not None:
            await self.on_record(record)

    async def _wait_writable(self) -> None:
        """The writer's backpressure, but a stop request ends the wait (nothing starts then)."""
        if not self.sink.is_blocked:
            return
        waits = {asyncio.ensure_future(self.sink.wait_writable()),
                 asyncio.ensure_future(self.stop_requested.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # -- the sweep loop

    async def _loop(self, *, once: bool) -> None:
        while not self.stop_requested.is_set():
            await self._apply_pending()
            assert self._engine is not None
            started = asyncio.get_running_loop().time()
            targets = list(self.targets)
            summary = await self._sweep(self._engine, targets)
            self._finished(summary, complete=summary.targets == len(targets)
                           and not self.stop_requested.is_set())
            if once:
                return
            await self._retain()
            await self._sleep_until_next(started)

    def _finished(self, summary: SweepSummary, *, complete: bool) -> None:
        self._last_summary = summary
        if complete:
            self._last_sweep_end, self._last_sweep_wall = time.monotonic(), time.time()
            self.metrics.sweep_duration.observe(summary.duration)
            self.metrics.last_sweep.set(self._last_sweep_wall)
        log.info(
            "sweep_finished",
            sweep=summary.sweep_id,
            targets=summary.targets,
            measured=summary.measured,
            failures=summary.failures,
            anomalies=summary.anomalies,
            interrupted=summary.interrupted,
            complete=complete,
            duration_s=round(summary.duration, 3),
            records_written=self.sink.stats.records_written,
        )
        self.notifier.status(self._status())

    async def _sweep(self, engine: Engine, targets: list[Target]) -> SweepSummary:
        task = asyncio.create_task(engine.sweep(targets))
        stop_wait = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.config.service.shutdown_grace)
            if not done:
                log.warning("grace_expired", in_flight=engine.in_flight)
                engine.interrupt()
        return await task

    async def _sleep_until_next(self, started: float) -> None:
        """Wait for the next sweep; a reload during the wait applies its new interval."""
        jitter = self.config.schedule.jitter
        fraction = 1 + random.uniform(-jitter, jitter)
        loop = asyncio.get_running_loop()
        while not self.stop_requested.is_set():
            self._wake.clear()
            config = self._pending.config if self._pending is not None else self.config
            remaining = started + config.schedule.interval * fraction - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=remaining)
            except TimeoutError:
                return

    # -- around the loop: systemd, retention, metrics, health

    async def _heartbeat(self) -> None:
        await heartbeat(self.notifier, self.systemd, self._status)

    async def _retention_timer(self) -> None:
        while True:
            await self._retain()
            await asyncio.sleep(RETENTION_EVERY)

    async def _retain(self) -> None:
        output = self.config.output
        if output.max_total_bytes is None and output.max_age_days is None:
            return
        try:
            async with asyncio.timeout(RETENTION_EVERY):
                kept = await asyncio.to_thread(retention.enforce, output, time.time())
        except (OSError, TimeoutError) as exc:
            log.warning("retention_failed", dir=str(output.dir), error=str(exc) or repr(exc))
            return
        if kept.deleted:
            self.metrics.retention_deleted.inc(len(kept.deleted))
            self.metrics.retention_freed.inc(kept.freed_bytes)
            log.info("retention_deleted", segments=len(kept.deleted), bytes=kept.freed_bytes,
                     remaining_bytes=kept.remaining_bytes, oldest=kept.deleted[0].name,
                     newest=kept.deleted[-1].name)

    def _status(self) -> str:
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

    def _reading(self) -> Reading:
        """Counters for a scrape (called from the metrics thread)."""
        stats = self.sink.stats
        with self._swap:
            engine, retired = self._engine, self._retired_waits
            workers = self._retired_workers
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
            targets=len(self.targets),
            loop_lag=self.loop_watch.current_lag(),
            loop_lag_max=self.loop_watch.max_lag,
            analysis_workers_started=workers + (judge.started if judge else 0),
            analysis_inline=engine is None or not engine.pipeline.judging_in_worker,
        )

    def health_problems(self) -> list[str]:
        """What ``/healthz`` reports (called from the metrics thread)."""
        since = time.monotonic() - (self._last_sweep_end or self._started)
        return problems(HealthInputs(
            loop_lag=self.loop_watch.current_lag(),
            writer_blocked=self.sink.stats.blocked,
            writer_error=self.sink.stats.last_error,
            seconds_since_sweep=since,
            sweep_interval=self.config.schedule.interval,
        ), stuck_after=self.loop_stuck_after)


async def heartbeat(notifier: Notifier, systemd: SystemdEnv, status: Callable[[], str]) -> None:
    """WATCHDOG=1 from the loop itself (a blocked loop stops it) and STATUS refreshes."""
    period = min(STATUS_EVERY, systemd.watchdog_interval or STATUS_EVERY)
    while True:
        if systemd.watchdog_interval is not None:
            notifier.send("WATCHDOG=1")
        notifier.status(status())
        await asyncio.sleep(period)


async def wait_for_stop_signal(on_hangup: Callable[[], None] | None = None) -> int:
    """Block until SIGTERM or SIGINT; return the signal number. SIGHUP calls ``on_hangup``
    (when given) instead of ending the process."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def note(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    handled = (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if on_hangup else ()))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, note, signum)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        return await received
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _helper_hangup() -> None:
    # Python's default for SIGHUP is to die (exit 129), which systemd counts as a clean
    # exit, so Restart=on-failure would leave the helper down. Nothing to reload in place:
    # the listen socket, TLS key and a LoadCredential= token are fixed for the process.
    log.warning("helper_sighup_ignored", hint="restart the helper to apply config changes")


async def serve_helper(config: Config, systemd: SystemdEnv | None = None) -> int:
    """``kzprobe helper``: serve the control protocol until SIGTERM/SIGINT (SIGHUP is ignored),
    with the daemon's systemd notifications: READY=1 once listening, WATCHDOG=1, STOPPING=1."""
    from kzprobe.helper import start_helper

    systemd = systemd or SystemdEnv()
    notifier = Notifier(systemd.notify_socket)
    runner, url = await start_helper(config)
    log.info("helper_listening", url=url, watchdog_s=systemd.watchdog_interval,
             notify=notifier.enabled)
    notifier.send("READY=1", f"STATUS=listening on {url}")
    beat = asyncio.create_task(heartbeat(notifier, systemd, lambda: f"listening on {url}"),
                               name="kzprobe-helper-heartbeat")
    try:
        await wait_for_stop_signal(on_hangup=_helper_hangup)
        notifier.send("STOPPING=1")
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        await runner.cleanup()
        notifier.close()
    return 0


def daemon_targets(config: Config) -> tuple[list[Target], list[str]]:
    """The daemon's targets from the config (CLI helper; raises TargetError)."""
    return load_targets(config.targets.urls, config.targets.files)
