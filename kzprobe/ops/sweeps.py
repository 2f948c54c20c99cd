"""The daemon's sweep scheduler: each group of targets swept on its own interval, retention.

Every group (the default ``[targets]`` one and each ``[[targets.groups]]``) has its own
clock: a group's next sweep is due ``interval`` (with jitter) after its last one started,
whether or not another group's sweep is still running, so a two-hour default sweep never
delays a one-minute watchlist. The sweeps share the engine's worker slots and rate limit
(:class:`~kzprobe.engine.Engine`). A staged reload applies when the next sweep of any
group starts; an engine it replaces is closed once its sweeps are over.

A stop request ends the waits at once and gives running sweeps the shutdown grace period
before the measurements still in flight are interrupted. Retention runs after every sweep
and on a timer of its own, off the loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from kzprobe.config import DEFAULT_GROUP
from kzprobe.engine import Engine, SweepSummary
from kzprobe.ops.budget import (
    RECENT_SWEEPS,
    DailyUse,
    GroupUse,
    Plan,
    group_cap,
    next_default_sweep,
    recent_sweep_bytes,
)
from kzprobe.ops.groups import SweepGroup, sweep_groups
from kzprobe.ops.readings import Readings, Running
from kzprobe.ops.reload import Reloader
from kzprobe.storage import retention

log = structlog.get_logger("kzprobe.ops.sweeps")

RETENTION_EVERY = 60.0  # seconds between retention passes (also after every sweep)
AfterSweep = Callable[[SweepSummary, bool], Awaitable[None]]  # (summary, complete)
BeforeSweep = Callable[[], Awaitable[None]]


def _utc(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class _Clock:
    """When a group's last sweep started (loop time) and its jitter draw for the next."""

    started: float
    fraction: float

    def due(self, interval: float) -> float:
        return self.started + interval * self.fraction


class SweepLoop:
    """Runs the groups' sweeps until ``stop_requested``; ``wake`` ends an idle wait."""

    def __init__(self, running: Running, readings: Readings, reloader: Reloader,
                 stop_requested: asyncio.Event, wake: asyncio.Event,
                 after_sweep: AfterSweep | None = None,
                 before_sweep: BeforeSweep | None = None) -> None:
        self.running = running
        self.readings = readings
        self.reloader = reloader
        self.stop_requested = stop_requested
        self.wake = wake
        self.after_sweep = after_sweep
        self.before_sweep = before_sweep
        self._clocks: dict[str, _Clock] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        # [limits] daily_bytes: bytes used today and each group's last sweeps' bytes; the
        # default group's sweeps are spaced out (never a watchlist's) when the day's
        # projected use would exceed the budget, and one starts only if its cost fits.
        self._used = DailyUse()
        self._sweep_bytes: dict[str, deque[int]] = {}
        self._plan: Plan | None = None  # the budget's last plan
        self._logged_for: tuple[float | None, ...] = ()  # the default sweep it was logged for

    async def run(self, *, once: bool) -> None:
        """Sweep until stopped; with ``once``, every group once (at the same time)."""
        swept: set[str] = set()
        try:
            while not self.stop_requested.is_set():
                self.wake.clear()  # before looking: a sweep ending from here on wakes _wait
                upcoming = self._upcoming()
                due = [g.name for g in upcoming if self._is_due(g) and g.name not in swept]
                if due:
                    await self.reloader.apply()  # the staged config, if any, starts now
                    if self.before_sweep is not None:  # the network's state, checked now
                        await self._unless_stopped(self.before_sweep())
                    if self.stop_requested.is_set():
                        break
                    for group in self.running_groups():
                        if group.name in due:
                            self._start(group, once=once)
                            swept.update({group.name} if once else ())
                if once and not self._active and swept >= {g.name for g in upcoming}:
                    return
                await self._wait(upcoming)
        finally:
            if self._active:
                await asyncio.gather(*self._active.values(), return_exceptions=True)

    async def _unless_stopped(self, work: Awaitable[None]) -> None:
        """Await ``work``, but a stop request ends the wait (an anchor check during an
        outage may take a measurement timeout or more: shutdown must not wait it out)."""
        task = asyncio.ensure_future(work)
        stop_wait = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def all_due_now(self) -> None:
        """Every group's next sweep is due at once (one running now: as soon as it ends)."""
        self._clocks.clear()
        self.wake.set()

    def running_groups(self) -> tuple[SweepGroup, ...]:
        return sweep_groups(self.running.config, self.running.targets)

    def _upcoming(self) -> tuple[SweepGroup, ...]:
        """The groups as the next sweep will see them (a staged reload's, if any)."""
        return sweep_groups(self.reloader.upcoming(), self.reloader.upcoming_targets())

    def _is_due(self, group: SweepGroup) -> bool:
        if group.name in self._active:
            return False
        return self._due(group) <= asyncio.get_running_loop().time()

    def _due(self, group: SweepGroup) -> float:
        """When the group's next sweep is due (loop time): after its interval with jitter
        and, for the default group, not before the daily budget allows it."""
        clock = self._clocks.get(group.name)
        due = -math.inf if clock is None else clock.due(group.interval)
        if group.name == DEFAULT_GROUP:
            plan = self._budget()
            if plan is not None:
                due = max(due, asyncio.get_running_loop().time() + plan.not_before - time.time())
        return due

    def _start(self, group: SweepGroup, *, once: bool) -> None:
        engine = self.running.engine
        assert engine is not None
        self.readings.metrics.group_interval.labels(group.name).set(group.interval)
        fraction = 1 + random.uniform(-group.jitter, group.jitter)
        self._clocks[group.name] = _Clock(asyncio.get_running_loop().time(), fraction)
        task = asyncio.create_task(self._sweep_group(engine, group, retain=not once),
                                   name=f"kzprobe-sweep-{group.name}")
        self._active[group.name] = task
        task.add_done_callback(lambda _: self._ended(group.name))

    def _ended(self, name: str) -> None:
        self._active.pop(name, None)
        self.wake.set()  # the scheduler looks again: this group's next sweep is now timed

    async def _wait(self, groups: tuple[SweepGroup, ...]) -> None:
        """Until the next group is due, a sweep ends, a reload is staged, or a stop."""
        if self.wake.is_set():
            return
        now = asyncio.get_running_loop().time()
        # a group never swept is due now unless the budget holds it (then it has a time)
        dues = [self._due(g) for g in groups if g.name not in self._active]
        due = min((d for d in dues if d > -math.inf), default=math.inf)
        timeout = max(0.0, due - now) if due < math.inf else None
        if timeout == 0.0:
            return
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=timeout)
        except TimeoutError:
            pass

    async def _sweep_group(self, engine: Engine, group: SweepGroup, *, retain: bool) -> None:
        try:
            summary = await self._sweep(engine, group)
            complete = (summary.targets == len(group.targets)
                        and not self.stop_requested.is_set())
            self._finished(summary, complete=complete)
            self._account(summary)
            if self.after_sweep is not None:
                await self.after_sweep(summary, complete)
            if retain:
                await self.retain()
        except Exception as exc:  # a sweep's bookkeeping must not end the scheduler
            log.error("sweep_failed", group=group.name, error=repr(exc)[:300])

    def _finished(self, summary: SweepSummary, *, complete: bool) -> None:
        self.readings.sweep_finished(summary, complete=complete)
        log.info(
            "sweep_finished",
            sweep=summary.sweep_id,
            group=summary.group,
            targets=summary.targets,
            measured=summary.measured,
            failures=summary.failures,
            anomalies=summary.anomalies,
            interrupted=summary.interrupted,
            complete=complete,
            duration_s=round(summary.duration, 3),
            bytes_sent=summary.bytes_sent,
            bytes_received=summary.bytes_received,
            # the sweep's own records (emitted; the writer's total also counts anchors and
            # earlier sweeps), by state and code, as the `run --once` summary counts them
            records=summary.measured,
            states=summary.tally.state_counts(),
            interference=dict(sorted(summary.tally.codes.items())),
            no_control=summary.tally.no_control,
            addresses_not_dialled=summary.tally.skipped,
            records_written_total=self.readings.sink.stats.records_written,
        )
        self.readings.refresh_status()

    def _account(self, summary: SweepSummary) -> None:
        """Count the sweep's bytes (in today's use and its group's recent sweeps)."""
        used = summary.bytes_sent + summary.bytes_received
        self._used.add(used, now=time.time())
        self._sweep_bytes.setdefault(summary.group, deque(maxlen=RECENT_SWEEPS)).append(used)
        # the loop re-plans when it looks at the default group again (this sweep's end wakes it)

    def _budget(self) -> Plan | None:
        """The daily budget's plan for the default group now (None: no budget), made while
        that group is not sweeping; a change in it is logged and shown in /healthz details."""
        daily = self.running.config.limits.daily_bytes
        if daily is None:
            return None
        now, loop_now = time.time(), asyncio.get_running_loop().time()
        clock = self._clocks.get(DEFAULT_GROUP)
        last_start = None if clock is None else now - (loop_now - clock.started)
        plan = next_default_sweep(
            daily_bytes=daily, used_today=self._used.today(now), now=now, last_start=last_start,
            groups=[self._group_use(g) for g in self.running_groups()])
        self._log_plan(plan, daily, now, None if clock is None else clock.started)
        return plan

    def _group_use(self, group: SweepGroup) -> GroupUse:
        body = self.running.config.limits.body_bytes
        return GroupUse(name=group.name, interval=group.interval,
                        sweep_bytes=recent_sweep_bytes(self._sweep_bytes.get(group.name, ())),
                        cap_bytes=group_cap([t.body_bytes or body for t in group.targets]))

    def _log_plan(self, plan: Plan, daily: int, now: float, cycle: float | None) -> None:
        """Log a change of state, and once per default sweep (``cycle``: its start) when the
        next one is: not the to and fro of a plan at the edge of one more sweep fitting, as
        each watch sweep shifts today's use a little (/healthz details show the latest)."""
        was, self._plan = self._plan, plan
        if plan.stretched:
            if was is None or was.state != plan.state or self._logged_for != (cycle,):
                self._logged_for = (cycle,)
                log.warning("bandwidth_budget_stretch", reason=plan.reason, daily_bytes=daily,
                            next_in_s=round(plan.not_before - now), state=plan.state,
                            next_sweep=_utc(plan.not_before))
            self.readings.note("bandwidth_budget", plan.reason)
            self.readings.held_until = {DEFAULT_GROUP: time.monotonic() + plan.not_before - now}
        elif was is not None and was.stretched:
            log.info("bandwidth_budget_ok", reason=plan.reason)
            self.readings.note("bandwidth_budget", None)
            self.readings.held_until = {}

    async def _sweep(self, engine: Engine, group: SweepGroup) -> SweepSummary:
        task = asyncio.create_task(engine.sweep(group.targets, group=group.name,
                                                priority=group.interval))
        stop_wait = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            engine.stop()  # an engine a reload replaced is not the one the Daemon stops
            grace = self.running.config.service.shutdown_grace
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                log.warning("grace_expired", group=group.name, in_flight=engine.in_flight)
                engine.interrupt()
        return await task

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
