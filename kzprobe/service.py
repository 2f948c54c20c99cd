"""The service: the one owner of the event loop and of signals.

``run_loop`` is the only place an event loop is created (uvloop when available).
:class:`Daemon` is ``kzprobe run``: sweeps on a schedule, writes through the one
writer, stops in a fixed order (stop starting, let in-flight finish within the grace
period, interrupt the rest with a record each, drain the writer, close files).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO, TypeVar

import orjson
import structlog

from kzprobe.config import Config
from kzprobe.engine import Engine, Prober, SweepSummary, raise_nofile_limit
from kzprobe.sink import NdjsonSink
from kzprobe.targets import Target, load_targets, parse_target

T = TypeVar("T")
log = structlog.get_logger("kzprobe.service")


def run_loop(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on a fresh loop (uvloop if installed); the only loop kzprobe creates."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def measure_urls(config: Config, urls: list[str], out: TextIO = sys.stdout) -> int:
    """``kzprobe measure``: measure each URL now, print records in input order."""
    targets = [parse_target(url, origin=f"argv[{i}]") for i, url in enumerate(urls)]
    raise_nofile_limit()
    prober = Prober(config)
    gate = asyncio.Semaphore(config.limits.concurrency)

    async def one(target: Target) -> dict[str, Any]:
        async with gate:
            return await prober.measure(target)

    try:
        tasks = [asyncio.ensure_future(one(t)) for t in targets]
        for task in tasks:
            record = await task
            out.write(orjson.dumps(record).decode() + "\n")
            out.flush()
    finally:
        await prober.aclose()
    return 0


class Daemon:
    """``kzprobe run``: continuous (or ``--once``) sweeps into rotating NDJSON."""

    def __init__(self, config: Config, targets: list[Target], *,
                 on_record: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.targets = targets
        self.on_record = on_record
        self.sink = NdjsonSink(config.output)
        self.stop_requested = asyncio.Event()
        self.force_exit = False
        self._engine: Engine | None = None
        self._signals = 0

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """First signal: drain. A second SIGINT: interrupt in-flight measurements now."""
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            self.force_exit = True
            if self._engine is not None:
                self._engine.interrupt()
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stop_requested.set()
        if self._engine is not None:
            self._engine.stop()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    async def serve(self, *, once: bool) -> int:
        """Run until stopped (or one sweep with ``once``); return the exit code."""
        raise_nofile_limit()
        self._install_signals()
        recovered = await self.sink.start()
        if recovered:
            log.info("segments_recovered", count=len(recovered))
        prober = Prober(self.config)
        self._engine = Engine(prober, self._emit, wait_writable=self.sink.wait_writable)
        try:
            await self._loop(self._engine, once=once)
        finally:
            await prober.aclose()
            await self.sink.aclose()
            self._remove_signals()
        log.info("stopped", records=self.sink.stats.records_written)
        return 0

    async def _emit(self, record: dict[str, Any]) -> None:
        await self.sink.write(orjson.dumps(record))
        if self.on_record is not None:
            await self.on_record(record)

    async def _loop(self, engine: Engine, *, once: bool) -> None:
        while not self.stop_requested.is_set():
            started = asyncio.get_running_loop().time()
            summary = await self._sweep(engine)
            log.info(
                "sweep_finished",
                sweep=summary.sweep_id,
                targets=summary.targets,
                measured=summary.measured,
                failures=summary.failures,
                interrupted=summary.interrupted,
                duration_s=round(summary.duration, 3),
            )
            if once:
                return
            await self._sleep_until_next(started)

    async def _sweep(self, engine: Engine) -> SweepSummary:
        task = asyncio.create_task(engine.sweep(list(self.targets)))
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
        schedule = self.config.schedule
        delay = schedule.interval * (1 + random.uniform(-schedule.jitter, schedule.jitter))
        remaining = started + delay - asyncio.get_running_loop().time()
        if remaining > 0:
            try:
                await asyncio.wait_for(self.stop_requested.wait(), timeout=remaining)
            except TimeoutError:
                pass


async def wait_for_stop_signal() -> int:
    """Block until SIGTERM or SIGINT; return the signal number."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def note(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, note, signum)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def serve_helper(config: Config) -> int:
    """``kzprobe helper``: serve the control protocol until SIGTERM/SIGINT."""
    from kzprobe.helper import start_helper

    runner, url = await start_helper(config)
    log.info("helper_listening", url=url)
    try:
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
    return 0


def daemon_targets(config: Config) -> tuple[list[Target], list[str]]:
    """The daemon's targets from the config (CLI helper; raises TargetError)."""
    return load_targets(config.targets.urls, config.targets.files)
