"""SIGHUP: re-read the config file and target lists off the loop, stage, apply at a sweep.

The files are read in a daemon thread of their own (a hung network file system must not
keep the daemon from stopping), the new probe resources are built, and the result waits
as :class:`Pending` until the sweep loop applies it before its next sweep, so no
measurement in flight is dropped. A broken config is logged and the running one kept;
settings bound to the open writer or the metrics listener keep their running values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from kzprobe.config import Config, load_config
from kzprobe.engine import Engine
from kzprobe.errors import KzprobeError
from kzprobe.ops.groups import load_group_targets
from kzprobe.ops.readings import Readings, Running
from kzprobe.targets import Target

T = TypeVar("T")
log = structlog.get_logger("kzprobe.ops.reload")

RELOAD_TIMEOUT = 60.0  # reading and parsing the config and target lists on SIGHUP
# Output settings bound to the open writer: a reload logs that they need a restart.
RESTART_ONLY_OUTPUT = ("dir", "prefix", "rotate_bytes", "rotate_seconds", "compress",
                       "fsync_interval")


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


def daemon_targets(config: Config) -> tuple[list[Target], list[str]]:
    """The daemon's targets, every group's, from the config (CLI helper; raises TargetError)."""
    return load_group_targets(config)


def load_inputs(path: Path) -> Inputs:
    """Read the config file and its target lists (blocking; raises KzprobeError)."""
    loaded = load_config(path)
    targets, target_warnings = daemon_targets(loaded.config)
    if not targets:
        raise KzprobeError(f"{path}: no usable targets")
    return Inputs(loaded.config, tuple(targets), (*loaded.warnings, *target_warnings))


@dataclass(frozen=True, slots=True)
class Pending:
    """A reloaded config waiting for the next sweep, with its probe resources built."""

    config: Config
    targets: tuple[Target, ...]
    engine: Engine


def with_probe_id(config: Config, probe_id: str | None) -> Config:
    """``config`` naming the probe as its segment files do (the stored id by default)."""
    return dataclasses.replace(config, probe=dataclasses.replace(config.probe, id=probe_id))


def restartless(old: Config, new: Config) -> Config:
    """``new``, but keeping the running values of settings that need a restart."""
    changed = [f"output.{k}" for k in RESTART_ONLY_OUTPUT
               if getattr(new.output, k) != getattr(old.output, k)]
    if new.service.metrics_listen != old.service.metrics_listen:
        changed.append("service.metrics_listen")
    if new.probe.id not in (None, old.probe.id):
        changed.append("probe.id")
    if new.alerts != old.alerts:  # the event log, outbox cursors and webhooks are open
        changed.append("alerts")
    if new.network != old.network:  # the running monitor's anchors and baselines
        changed.append("network")
    if changed:
        log.warning("config_reload_needs_restart", keys=changed, kept="running values")
    output = dataclasses.replace(
        new.output, **{k: getattr(old.output, k) for k in RESTART_ONLY_OUTPUT})
    service = dataclasses.replace(new.service, metrics_listen=old.service.metrics_listen)
    return dataclasses.replace(with_probe_id(new, old.probe.id), output=output,
                               service=service, alerts=old.alerts, network=old.network)


class Reloader:
    """Stages reloads of the running config and applies the latest one when asked."""

    def __init__(self, running: Running, readings: Readings, wake: asyncio.Event,
                 new_engine: Callable[[Config], Engine]) -> None:
        self.running = running
        self.readings = readings
        self.wake = wake  # the sweep loop's idle wait: a new interval may end it sooner
        self.new_engine = new_engine
        self.task: asyncio.Task[None] | None = None
        self._pending: Pending | None = None
        self._again = False
        self._retiring: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        """SIGHUP: re-read the config file and target lists in the background."""
        if self.running.config.source is None:
            log.warning("config_reload_unavailable", reason="not started from a config file")
            return
        if self.task is not None and not self.task.done():
            self._again = True  # a reload is running: read the files once more after it
            return
        self.task = asyncio.create_task(self._reload(), name="kzprobe-reload")

    def upcoming(self) -> Config:
        """The config the next sweep runs with: a staged one, or the running one."""
        return self._pending.config if self._pending is not None else self.running.config

    def upcoming_targets(self) -> list[Target]:
        """The targets the next sweep chooses from: staged ones, or the running ones."""
        pending = self._pending
        return list(pending.targets) if pending is not None else self.running.targets

    def take(self) -> Pending | None:
        """The staged reload, no longer staged (for applying, or closing at shutdown)."""
        pending, self._pending = self._pending, None
        return pending

    async def apply(self) -> None:
        """Before a sweep: switch to the staged config, targets and a new engine."""
        pending = self.take()
        if pending is None:
            return
        old = self.running.engine
        self.running.config, self.running.targets = pending.config, list(pending.targets)
        if old is not None:
            pending.engine.pipeline.scrubber.adopt(old.pipeline.scrubber)
            pending.engine.pipeline.locator.adopt(old.pipeline.locator)
        self.running.set_engine(pending.engine)
        if old is not None:  # another group's sweep may still run on it: close it after
            task = asyncio.create_task(self._retire(old), name="kzprobe-retire-engine")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        log.info("config_applied", targets=len(self.running.targets))

    @staticmethod
    async def _retire(engine: Engine) -> None:
        await engine.wait_idle()
        await engine.aclose()

    async def retired(self) -> None:
        """Until the engines replaced by reloads are closed (at shutdown, sweeps are over)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _reload(self) -> None:
        self.readings.reloading()
        try:
            while True:
                self._again = False
                await self._reload_once()
                if not self._again:
                    return
        finally:
            self.readings.ready()

    async def _reload_once(self) -> None:
        path = self.running.config.source
        assert path is not None
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                inputs = await blocking_io(lambda: load_inputs(path))
            config = restartless(self.running.config, inputs.config)
            engine = self.new_engine(config)
            await engine.start()
        except Exception as exc:  # any bad config keeps the running one
            self.readings.metrics.reloads.labels("failure").inc()
            log.error("config_reload_failed", path=str(path), error=str(exc) or repr(exc),
                      kept="the running config")
            return
        for warning in inputs.warnings:
            log.warning("config_warning", warning=warning)
        await self._stage(Pending(config, inputs.targets, engine))
        self.readings.metrics.reloads.labels("success").inc()
        log.info("config_reloaded", path=str(path), targets=len(inputs.targets),
                 applies="at the next sweep")

    async def _stage(self, pending: Pending) -> None:
        old, self._pending = self._pending, pending
        self.wake.set()  # a sleeping loop recomputes its wait with the new interval
        if old is not None:
            await old.engine.aclose()
