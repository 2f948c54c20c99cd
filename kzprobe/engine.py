"""The engine: targets in, records out, through a bounded, rate-limited worker pool.

It owns scheduling, limits, the whole-measurement deadline and the turning of surprises
into records. It does not own the event loop, signals or files: the service runs it,
and records leave through one ``emit`` callable (the writer's queue, or stdout).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

import structlog

from kzprobe.config import Config
from kzprobe.errors import FAILURE_INTERRUPTED, classify
from kzprobe.measure import traffic
from kzprobe.measure.context import Experiment, Stopwatch
from kzprobe.measure.loader import experiment_for
from kzprobe.measure.ratelimit import PriorityGate, TokenBucket
from kzprobe.measure.resources import Resources, build_resources
from kzprobe.progress import Tally
from kzprobe.record import build_record
from kzprobe.targets import Target
from kzprobe.verdict import outcome as outcomes
from kzprobe.verdict.outcome import outcome
from kzprobe.verdict.pipeline import Pipeline

log = structlog.get_logger("kzprobe.engine")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Lookup = Callable[[str], Experiment]  # URL scheme -> the experiment that measures it


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit; thousands of sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft



def build_engine(config: Config, emit: Emit | None = None, *,
                 wait_writable: Callable[[], Awaitable[None]] | None = None) -> Engine:
    """An engine and everything it is given, from one config: what the service and ``kzprobe
    measure`` run. The pipeline first: bad fingerprint files fail before any socket exists."""
    pipeline = Pipeline(config)
    return Engine(build_resources(config), pipeline, emit or _discard,
                  wait_writable=wait_writable)


async def _discard(record: dict[str, Any]) -> None:
    """For an engine that only measures (``kzprobe measure`` prints records in input order
    itself): no record is emitted."""


@dataclass(slots=True)
class SweepSummary:
    sweep_id: str
    group: str = "default"
    targets: int = 0
    measured: int = 0
    failures: int = 0
    anomalies: int = 0
    interrupted: int = 0
    bytes_sent: int = 0  # x_bytes of the records measured
    bytes_received: int = 0
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0
    tally: Tally = field(default_factory=Tally)  # states and codes, as the run summary

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one measured record by its :func:`~kzprobe.verdict.outcome.outcome`."""
        self.measured += 1
        self.tally.add(record)
        word = outcome(record)
        self.failures += word == outcomes.FAILURE
        self.anomalies += word == outcomes.ANOMALY
        self.interrupted += word == outcomes.INTERRUPTED
        sent, received = traffic.record_bytes(record)
        self.bytes_sent += sent
        self.bytes_received += received


class Engine:
    """Runs sweeps: a bounded queue feeding ``limits.concurrency`` workers.

    Everything arrives as arguments: the measuring ``resources``, the verdict ``pipeline``,
    ``emit`` for finished records and ``experiments``, the lookup from a URL scheme to its
    experiment. The engine owns what it is given from then on (:meth:`aclose`).
    """

    def __init__(
        self,
        resources: Resources,
        pipeline: Pipeline,
        emit: Emit,
        *,
        experiments: Lookup = experiment_for,
        wait_writable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = resources.config
        self.resources = resources
        self.pipeline = pipeline
        self.emit = emit
        self.experiments = experiments
        self.wait_writable = wait_writable
        limits = self.config.limits
        self.bucket = TokenBucket(limits.rate, limits.burst)
        # One worker pool and one rate limit for every group's sweeps; a group with a
        # shorter interval (a watchlist) is served first at both.
        self.slots = PriorityGate(max(1, limits.concurrency))
        self._turn = PriorityGate(1)  # who takes the next token from the bucket
        self.stopping = asyncio.Event()
        self._measuring: set[asyncio.Task[dict[str, Any]]] = set()
        self._queues: set[asyncio.Queue[Target | None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Start the analysis worker before the first measurement needs it."""
        await self.pipeline.start()

    async def aclose(self) -> None:
        """Close the measuring resources and the analysis worker."""
        await self.resources.aclose()
        await self.pipeline.aclose()

    async def measure(self, target: Target, *, sweep_id: str | None = None) -> dict[str, Any]:
        """Measure one target (again, while it looks blocked); always returns a record,
        with the bytes all its attempts moved (``x_bytes``)."""
        with traffic.metered() as meter:
            record = await self.pipeline.run(
                target.url, lambda: self._measure_once(target, sweep_id))
            record["test_keys"]["x_bytes"] = meter.totals()
        return record

    async def _measure_once(self, target: Target, sweep_id: str | None) -> dict[str, Any]:
        experiment = self.experiments(target.scheme)
        started, clock = time.time(), Stopwatch()
        try:
            async with asyncio.timeout(self.config.timeouts.measurement):
                keys = await experiment.measure(target, self.resources.context, clock)
        except asyncio.CancelledError:
            # Only the engine cancels a measurement task (shutdown past its grace period):
            # the task ends here with a record saying so, instead of vanishing.
            keys = experiment.failure_keys(target, FAILURE_INTERRUPTED)
        except Exception as exc:  # a bug in one measurement must not stop the others
            log.warning("measurement_crashed", error=repr(exc)[:200])
            log.debug("measurement_crashed_target", url=target.url)
            keys = experiment.failure_keys(target, classify(exc))
        return build_record(
            target=target,
            config=self.config,
            test_name=experiment.test_name,
            test_version=experiment.test_version,
            test_keys=keys,
            started=started,
            runtime=clock.now(),
            sweep_id=sweep_id,
        )

    def set_rate_factor(self, factor: float) -> None:
        """Measure at ``factor`` times ``[limits] rate`` (an outage: ``[network] outage_rate``)."""
        self.bucket.rate = self.config.limits.rate * factor

    @property
    def in_flight(self) -> int:
        return len(self._measuring)

    @property
    def queue_depth(self) -> int:
        """Targets waiting for a worker in the running sweeps (a metric; 0 between sweeps)."""
        return sum(queue.qsize() for queue in list(self._queues))

    async def wait_idle(self) -> None:
        """Until no sweep runs on this engine (a reload retires it only then)."""
        await self._idle.wait()

    def stop(self) -> None:
        """Stop starting measurements; those in flight go on."""
        self.stopping.set()

    def interrupt(self) -> None:
        """Cancel the measurements in flight; each still yields an ``interrupted`` record."""
        for task in list(self._measuring):
            task.cancel()

    async def sweep(self, targets: Iterable[Target], *, group: str = "default",
                    priority: float = 0.0) -> SweepSummary:
        """Measure every target once (unless asked to stop); return the counts.

        Sweeps of several groups may run at once: they share the engine's worker slots and
        rate limit, a lower ``priority`` (the group's interval) served first."""
        summary = SweepSummary(sweep_id=uuid.uuid4().hex[:12], group=group)
        workers = max(1, self.config.limits.concurrency)
        if isinstance(targets, Sized):  # a 20-target watch sweep needs 20 workers, not 200
            workers = max(1, min(workers, len(targets)))
        queue: asyncio.Queue[Target | None] = asyncio.Queue(maxsize=workers * 4)
        self._queues.add(queue)
        self._idle.clear()
        tasks = [asyncio.create_task(self._worker(queue, summary, priority))
                 for _ in range(workers)]
        try:
            for target in targets:
                if self.stopping.is_set():
                    break
                await self._put(queue, target)
                summary.targets += 1
        finally:
            for _ in tasks:
                await self._put(queue, None, force=True)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._queues.discard(queue)
            if not self._queues:
                self._idle.set()
        summary.duration = time.monotonic() - summary.started
        return summary

    async def _put(
        self, queue: asyncio.Queue[Target | None], item: Target | None, *, force: bool = False
    ) -> None:
        while True:
            if self.stopping.is_set() and not force:
                return
            if not queue.full():
                queue.put_nowait(item)
                return
            try:  # full: wait for room, looking at ``stopping`` every second
                async with asyncio.timeout(1.0):
                    await queue.put(item)
                return
            except TimeoutError:
                continue

    async def _worker(self, queue: asyncio.Queue[Target | None], summary: SweepSummary,
                      priority: float) -> None:
        while (target := await queue.get()) is not None:
            if self.stopping.is_set():
                continue  # drain without measuring
            async with self.slots.hold(priority):
                record = await self._admitted(target, summary, priority)
            if record is not None:
                summary.add(record)
                await self.emit(record)

    async def _admitted(self, target: Target, summary: SweepSummary,
                        priority: float) -> dict[str, Any] | None:
        """Measure ``target`` in a worker slot once the rate limit and the writer allow."""
        if self.stopping.is_set():
            return None  # stopped while waiting for a slot
        async with self._turn.hold(priority):
            await self.bucket.acquire()
        if self.wait_writable is not None:
            await self.wait_writable()
            if self.stopping.is_set():
                return None  # stopped while the writer was blocked: do not start now
        task = asyncio.create_task(self.measure(target, sweep_id=summary.sweep_id))
        self._measuring.add(task)
        try:
            return await task
        finally:
            self._measuring.discard(task)
