"""The service: the one owner of the event loop and of signals.

``run_loop`` is the only place an event loop is created (uvloop when available).
:class:`Daemon` is ``kzprobe run``: sweeps on a schedule, writes through the one
writer, stops in a fixed order (stop starting, let in-flight finish within the grace
period, interrupt the rest with a record each, drain the writer, close files).
SIGHUP stages a reload (:mod:`kzprobe.ops.reload`) that the sweep loop
(:mod:`kzprobe.ops.sweeps`) applies at the next sweep; systemd notifications, metrics
and ``/healthz`` are :mod:`kzprobe.ops.readings`; the opt-in OONI collector upload
(:mod:`kzprobe.upload`) runs only with ``[upload] ooni_collector``, reads closed segments
and stops after the writer. ``serve_helper`` is ``kzprobe helper``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO, TypeVar

import orjson
import structlog

from kzprobe.alerts.core import Alerts
from kzprobe.alerts.reading import AlertReading
from kzprobe.config import Config
from kzprobe.engine import Engine, SweepSummary, build_engine, raise_nofile_limit
from kzprobe.ops.notify import Notifier, SystemdEnv
from kzprobe.ops.outages import NetworkWatch
from kzprobe.ops.readings import Readings, Running, heartbeat
from kzprobe.ops.reload import Reloader, with_probe_id
from kzprobe.ops.reload import daemon_targets as daemon_targets  # the CLI imports it from here
from kzprobe.ops.sweeps import SweepLoop
from kzprobe.storage.sink import NdjsonSink
from kzprobe.targets import Target, parse_target
from kzprobe.upload.uploader import Uploader

T = TypeVar("T")
log = structlog.get_logger("kzprobe.service")

CLOSE_TIMEOUT = 15.0  # seconds the writer gets to drain and close at shutdown
FORCED_CLOSE_TIMEOUT = 2.0  # ... after a second stop signal
ALERTS_CLOSE_TIMEOUT = 5.0  # seconds pending webhook deliveries get at shutdown
UPLOAD_CLOSE_TIMEOUT = 5.0  # seconds the OONI upload gets at shutdown (the rest: next start)
EXIT_RECORDS_LOST = 3  # stopped, but accepted records could not be written (disk full)

# Rarer GC runs: refcounting frees a measurement's garbage (benchmarks/README.md, finding 7).
GC_THRESHOLDS = (50_000, 20, 20)
# A busy loop must not starve the writer thread of the GIL (benchmarks/README.md, benchmark 3).
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


def warn_if_no_control(config: Config) -> None:
    """Say at start that verdicts will have no control: ``unknown``, or OONI's rules without
    one (a failed lookup then reads ``blocking: false, accessible: true``)."""
    if not config.control.helpers:
        log.warning("no_control",
                    consequence="verdicts have no control measurement: most are unknown, "
                                "and OONI's rules without one can read as accessible",
                    fix="set [control] helpers")


async def measure_urls(config: Config, urls: list[str], out: TextIO = sys.stdout,
                       on_record: Callable[[dict[str, Any]], None] | None = None) -> int:
    """``kzprobe measure``: measure each URL now, print records in input order
    (``on_record`` sees each one as it finishes: the CLI's progress)."""
    targets = [parse_target(url, origin=f"argv[{i}]") for i, url in enumerate(urls)]
    raise_nofile_limit()
    warn_if_public_ip_unknown(config)
    warn_if_no_control(config)
    engine = build_engine(config)
    await engine.start()
    gate = asyncio.Semaphore(config.limits.concurrency)

    async def one(target: Target) -> dict[str, Any]:
        async with gate:
            record = await engine.measure(target)
        if on_record is not None:
            on_record(record)
        return record

    try:
        tasks = [asyncio.ensure_future(one(t)) for t in targets]
        for task in tasks:
            record = await task
            out.write(orjson.dumps(record).decode() + "\n")
            out.flush()
    finally:
        await engine.aclose()
    return 0


class Daemon:
    """``kzprobe run``: continuous (or ``--once``) sweeps into rotating NDJSON.

    A composition of its parts: :class:`Running` (what runs now), :class:`Readings`
    (systemd, metrics, ``/healthz``), :class:`Reloader` (SIGHUP staging) and
    :class:`SweepLoop`. The Daemon itself owns the signals, the writer and the order
    of start and stop.
    """

    def __init__(self, config: Config, targets: list[Target], *,
                 on_record: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                 systemd: SystemdEnv | None = None, loop_stuck_after: float = 10.0) -> None:
        self.on_record = on_record
        self.sink = NdjsonSink(config.output, probe_id=config.probe.id)
        self.stop_requested = asyncio.Event()
        self.force_exit = False
        self.running = Running(config, targets)
        self.alerts: Alerts | None = None  # made once the probe id is known (serve)
        self.uploader: Uploader | None = None  # [upload] ooni_collector only (serve)
        self.readings = Readings(self.running, self.sink, self.stop_requested,
                                 systemd or SystemdEnv(), loop_stuck_after=loop_stuck_after,
                                 alerts=self._alert_reading)
        wake = asyncio.Event()  # the idle wait between sweeps: stop, or a reload
        self.reloader = Reloader(self.running, self.readings, wake, self._new_engine)
        self.sweeps = SweepLoop(self.running, self.readings, self.reloader,
                                self.stop_requested, wake, after_sweep=self._after_sweep,
                                before_sweep=self._before_sweep)
        self.network: NetworkWatch | None = None  # made with the first engine (_start)
        self._signals = 0
        self._background: list[asyncio.Task[None]] = []

    @property
    def metrics_address(self) -> str | None:
        """Where ``/metrics`` and ``/healthz`` are served (None: not served)."""
        return self.readings.metrics_address

    # -- signals

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """First signal: drain. A second one: interrupt in-flight measurements now."""
        self._signals += 1
        engine = self.running.engine
        if self._signals > 1:
            self.force_exit = True
            if engine is not None:
                engine.interrupt()
        log.info("stop_requested", signal=signal.Signals(signum).name, forced=self.force_exit)
        self.readings.stopping()
        self.stop_requested.set()
        self.sweeps.wake.set()
        if engine is not None:
            engine.stop()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and target lists in the background."""
        self.reloader.request()

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
        self.running.config = with_probe_id(self.running.config, self.sink.probe_id)
        try:
            self.alerts = Alerts(self.running.config, probe_id=self.sink.probe_id)
            await self.alerts.start()
            await self._start_upload()
            await self._start(once=once)
            await self.sweeps.run(once=once)
        finally:
            await self._shutdown()
        stats = self.sink.stats
        if stats.records_lost:  # systemd and scripts must see it: not a clean stop
            log.error("stopped", records=stats.records_written, records_lost=stats.records_lost,
                      error=stats.last_error, exit_code=EXIT_RECORDS_LOST)
            return EXIT_RECORDS_LOST
        log.info("stopped", records=stats.records_written)
        return 0

    async def _start_upload(self) -> None:
        """The OONI collector upload, only when configured: it reads closed segments only
        (the sink owns the open one), so it never races the writer."""
        if not self.running.config.upload.ooni_collector:
            return
        self.uploader = Uploader(self.running.config)
        await self.uploader.start()
        self.readings.metrics.add_upload(self.uploader.stats)

    async def _start(self, *, once: bool) -> None:
        warn_if_public_ip_unknown(self.running.config)
        warn_if_no_control(self.running.config)
        engine = self._new_engine(self.running.config)
        await engine.start()
        self.running.set_engine(engine)
        self.network = NetworkWatch(self.running, self.readings, self._write_anchor,
                                    lambda: self.alerts, self.sweeps.all_due_now)
        await self.network.resume()
        self.network.start()
        if not once:
            self.readings.start_server()
        self._background = [asyncio.create_task(coro, name=name) for name, coro in (
            ("kzprobe-loopwatch", self.readings.loop_watch.run()),
            ("kzprobe-heartbeat", self.readings.heartbeat()),
            ("kzprobe-retention", self.sweeps.retention_timer()),
        )]
        gc.freeze()  # start-up objects (modules, targets, fingerprints) live for the run:
        # keep them out of every later collection
        self.readings.ready()
        log.info("daemon_ready", targets=len(self.running.targets),
                 groups={g.name: len(g.targets) for g in self.sweeps.running_groups()},
                 metrics=self.metrics_address, watchdog_s=self.readings.systemd.watchdog_interval,
                 notify=self.readings.notifier.enabled)

    async def _shutdown(self) -> None:
        reload_task = self.reloader.task
        tasks = [*self._background, *([reload_task] if reload_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.reloader.retired()
        if self.network is not None:
            await self.network.aclose()
        if self.alerts is not None:  # what waits for delivery stays in the durable outbox
            await self.alerts.aclose(timeout=0.5 if self.force_exit else ALERTS_CLOSE_TIMEOUT)
        pending, engine = self.reloader.take(), self.running.engine
        for closing in (engine, pending.engine if pending else None):
            if closing is not None:
                await closing.aclose()
        timeout = FORCED_CLOSE_TIMEOUT if self.force_exit else CLOSE_TIMEOUT
        await self.sink.aclose(timeout=timeout)
        if self.sink.stats.records_lost:
            self.readings.refresh_status()
        if self.uploader is not None:  # after the sink: its last segment is closed now
            await self.uploader.aclose(timeout=0.5 if self.force_exit else UPLOAD_CLOSE_TIMEOUT)
        self._remove_signals()
        await self.readings.stop_server()
        self.readings.notifier.close()

    # -- engines and records

    def _new_engine(self, config: Config) -> Engine:
        return build_engine(config, self._emit, wait_writable=self._wait_writable)

    async def _emit(self, record: dict[str, Any]) -> None:
        """A target's finished record: stamped with the network state, written, observed."""
        if self.network is not None:
            self.network.flag(record)
        await self._write(record)

    async def _write(self, record: dict[str, Any], *, alerts: bool = True) -> None:
        await self.sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.readings.metrics.observe(record)
        if alerts and self.alerts is not None:
            self.alerts.observe(record)
        if self.on_record is not None:
            await self.on_record(record)

    async def _write_anchor(self, record: dict[str, Any]) -> None:
        """An anchor's record: written and counted, but no target of the alerts (its state is
        the network's, its changes would wait for an "anchors" sweep that never ends, and an
        anchor may share its input with a watched target's entry)."""
        await self._write(record, alerts=False)

    async def _before_sweep(self) -> None:
        if self.network is not None:
            await self.network.before_sweep()

    async def _after_sweep(self, summary: SweepSummary, complete: bool) -> None:
        if self.uploader is not None:
            self.uploader.nudge()
        if self.alerts is not None:
            await self.alerts.sweep_finished(summary.group, summary.sweep_id,
                                             records=summary.measured)

    def _alert_reading(self) -> AlertReading:
        alerts = self.alerts
        return alerts.reading() if alerts is not None else AlertReading()

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
