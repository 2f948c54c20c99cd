"""The daemon's sweep loop: a sweep per interval, a staged reload before each, retention.

A stop request ends the wait between sweeps at once and gives a running sweep the
shutdown grace period before the measurements still in flight are interrupted.
Retention runs after every sweep and on a timer of its own, off the loop.
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from kzprobe.engine import Engine, SweepSummary
from kzprobe.ops.readings import Readings, Running
from kzprobe.ops.reload import Reloader
from kzprobe.storage import retention
from kzprobe.targets import Target

log = structlog.get_logger("kzprobe.ops.sweeps")

RETENTION_EVERY = 60.0  # seconds between retention passes (also after every sweep)


class SweepLoop:
    """Runs the sweeps of ``running`` until ``stop_requested``; ``wake`` ends an idle wait."""

    def __init__(self, running: Running, readings: Readings, reloader: Reloader,
                 stop_requested: asyncio.Event, wake: asyncio.Event) -> None:
        self.running = running
        self.readings = readings
        self.reloader = reloader
        self.stop_requested = stop_requested
        self.wake = wake

    async def run(self, *, once: bool) -> None:
        while not self.stop_requested.is_set():
            await self.reloader.apply()
            engine = self.running.engine
            assert engine is not None
            started = asyncio.get_running_loop().time()
            targets = list(self.running.targets)
            summary = await self._sweep(engine, targets)
            self._finished(summary, complete=summary.targets == len(targets)
                           and not self.stop_requested.is_set())
            if once:
                return
            await self.retain()
            await self._sleep_until_next(started)

    def _finished(self, summary: SweepSummary, *, complete: bool) -> None:
        self.readings.sweep_finished(summary, complete=complete)
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
            records_written=self.readings.sink.stats.records_written,
        )
        self.readings.refresh_status()

    async def _sweep(self, engine: Engine, targets: list[Target]) -> SweepSummary:
        task = asyncio.create_task(engine.sweep(targets))
        stop_wait = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            grace = self.running.config.service.shutdown_grace
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                log.warning("grace_expired", in_flight=engine.in_flight)
                engine.interrupt()
        return await task

    async def _sleep_until_next(self, started: float) -> None:
        """Wait for the next sweep; a reload during the wait applies its new interval."""
        jitter = self.running.config.schedule.jitter
        fraction = 1 + random.uniform(-jitter, jitter)
        loop = asyncio.get_running_loop()
        while not self.stop_requested.is_set():
            self.wake.clear()
            config = self.reloader.upcoming()
            remaining = started + config.schedule.interval * fraction - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=remaining)
            except TimeoutError:
                return

    async def retention_timer(self) -> None:
        while True:
            await self.retain()
            await asyncio.sleep(RETENTION_EVERY)

    async def retain(self) -> None:
        """One retention pass over the output directory (in a thread, bounded in time)."""
        output = self.running.config.output
        if output.max_total_bytes is None and output.max_age_days is None:
            return
        try:
            async with asyncio.timeout(RETENTION_EVERY):
                kept = await asyncio.to_thread(retention.enforce, output, time.time())
        except (OSError, TimeoutError) as exc:
            log.warning("retention_failed", dir=str(output.dir), error=str(exc) or repr(exc))
            return
        if kept.deleted:
            metrics = self.readings.metrics
            metrics.retention_deleted.inc(len(kept.deleted))
            metrics.retention_freed.inc(kept.freed_bytes)
            log.info("retention_deleted", segments=len(kept.deleted), bytes=kept.freed_bytes,
                     remaining_bytes=kept.remaining_bytes, oldest=kept.deleted[0].name,
                     newest=kept.deleted[-1].name)
