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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from kzprobe.config import Config
from kzprobe.errors import FAILURE_INTERRUPTED, classify
from kzprobe.measure.context import ProbeContext, Stopwatch
from kzprobe.measure.control import ControlClient
from kzprobe.measure.loader import experiment_for
from kzprobe.measure.ratelimit import HostLimiter, TokenBucket
from kzprobe.measure.registry import kind_of
from kzprobe.measure.steps.http import HandoffConnector
from kzprobe.measure.steps.tls import make_context
from kzprobe.record import build_record
from kzprobe.targets import Target
from kzprobe.verdict import outcome as outcomes
from kzprobe.verdict import worker as judging
from kzprobe.verdict.outcome import is_interrupted, outcome
from kzprobe.verdict.pipeline import (
    Analyzer,
    Scrubber,
    Verdict,
    choose,
    drop_bodies,
    keep_bodies,
    looks_blocked,
)
from kzprobe.verdict.worker import ProcessJudge

log = structlog.get_logger("kzprobe.engine")

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit; thousands of sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


class Prober:
    """Long-lived probe resources (TLS contexts, the aiohttp session, limiters)."""

    def __init__(self, config: Config, *, may_dial: Callable[[str], bool] | None = None,
                 source_address: str | None = None) -> None:
        self.config = config
        alpn = config.tls.alpn
        self._session = aiohttp.ClientSession(
            connector=HandoffConnector(),
            cookie_jar=aiohttp.DummyCookieJar(),
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
            auto_decompress=True,
        )
        # aiohttp retries an idempotent request once after a reset or disconnect; a
        # measurement must record that first failure, not a second attempt (which would
        # find the handed-over connection already gone).
        self._session._retry_connection = False
        self.context = ProbeContext(
            config=config,
            verify_context=make_context(ca_file=config.tls.ca_file, alpn=alpn),
            http11_context=make_context(ca_file=config.tls.ca_file, alpn=("http/1.1",)),
            benign_context=make_context(ca_file=config.tls.ca_file, alpn=alpn, verify=False),
            session=self._session,
            host_limiter=HostLimiter(config.limits.per_host),
            may_dial=may_dial,
            source_address=source_address,
            control=self._control_client(config),
        )
        self.analyzer = Analyzer(config)  # built here too: bad fingerprint files fail at start
        self.scrubber = Scrubber(config)
        self.judge = (ProcessJudge(config, timeout=config.analysis.worker_timeout)
                      if config.analysis.worker_process else None)

    @staticmethod
    def _control_client(config: Config) -> ControlClient | None:
        if not config.control.helper_urls:
            return None
        return ControlClient(config.control.helpers, timeout=config.timeouts.control,
                             concurrency=config.control.concurrency)

    async def measure(self, target: Target, *, sweep_id: str | None = None) -> dict[str, Any]:
        """Measure one target (again, while it looks blocked); always returns a record."""
        attempts: list[tuple[dict[str, Any], Verdict]] = []
        for _ in range(1 + self.config.analysis.retries):
            record = await self._measure_once(target, sweep_id)
            verdict = await self._judge(record, target)
            attempts.append((record, verdict))
            self.scrubber.learn(record["test_keys"])
            if not looks_blocked(verdict) or is_interrupted(record):
                break
        index, agreeing = choose([verdict for _, verdict in attempts])
        record, verdict = attempts[index]
        keys = record["test_keys"]
        keys["x_attempts"] = len(attempts)
        keys["x_attempts_agreeing"] = agreeing
        keys["x_attempt_verdicts"] = [
            {"blocking": v[0], "interference": list(v[1])} for _, v in attempts]
        record = self.scrubber.scrub(record)
        if not keep_bodies(self.config.output.store_bodies, verdict):
            drop_bodies(record["test_keys"])  # after scrubbing: the hash hides the address too
        return record

    async def _judge(self, record: dict[str, Any], target: Target) -> Verdict:
        test_name = record.get("test_name")
        if is_interrupted(record) or not isinstance(test_name, str) or kind_of(test_name) is None:
            return (None, ())
        try:
            if self.judge is None or not self.judge.usable:
                return judging.judge(self.analyzer, test_name, record["test_keys"], target.url)
            record["test_keys"], verdict = await self.judge.judge(
                test_name, record["test_keys"], target.url)
            return verdict
        except judging.WorkerUnavailable as exc:  # a crash loop: judge here from now on
            log.error("analysis_worker_failed", error=str(exc), fallback="inline")
            return await self._judge(record, target)
        except asyncio.CancelledError:  # shutdown past its grace: the record still goes out
            record["test_keys"]["x_analysis_failure"] = FAILURE_INTERRUPTED
        except Exception as exc:  # a bug in analysis must not lose the observations
            log.warning("analysis_crashed", error=repr(exc)[:200])
            log.debug("analysis_crashed_target", url=target.url)
            record["test_keys"]["x_analysis_failure"] = judging.failure_of(exc)
        return (None, ())

    async def _measure_once(self, target: Target, sweep_id: str | None) -> dict[str, Any]:
        experiment = experiment_for(target.scheme)
        started, clock = time.time(), Stopwatch()
        try:
            async with asyncio.timeout(self.config.timeouts.measurement):
                keys = await experiment.measure(target, self.context, clock)
        except asyncio.CancelledError:
            # Only the engine cancels a measurement task (shutdown past its grace period):
            # the task ends here with a record saying so, instead of vanishing.
            keys = experiment.failure_keys(target, FAILURE_INTERRUPTED)
        except Exception as exc:  # a bug in one measurement must not stop the others
            log.warning("measurement_crashed", error=repr(exc)[:200])
            log.debug("measurement_crashed_target", url=target.url)
            keys = experiment.failure_keys(target, classify(exc))
        return self._record(target, experiment, keys, started, clock, sweep_id)

    def _record(
        self,
        target: Target,
        experiment: Any,
        keys: Mapping[str, Any],
        started: float,
        clock: Stopwatch,
        sweep_id: str | None,
    ) -> dict[str, Any]:
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

    @property
    def judging_in_worker(self) -> bool:
        """Whether verdicts come from the analysis worker (else from this loop)."""
        return self.judge is not None and self.judge.usable

    async def start(self) -> None:
        """Start the analysis worker before the first measurement needs it.

        A worker that cannot start is logged and judging falls back to this loop: a
        verdict computed here beats a record without one.
        """
        if self.judge is None:
            return
        try:
            await self.judge.start()
        except Exception as exc:
            log.error("analysis_worker_failed", error=repr(exc)[:200], fallback="inline")
            await self.judge.aclose()
            self.judge = None

    async def aclose(self) -> None:
        await self._session.close()
        await self.context.dns_channels.aclose()
        if self.judge is not None:
            await self.judge.aclose()
        if self.context.control is not None:
            await self.context.control.aclose()


@dataclass(slots=True)
class SweepSummary:
    sweep_id: str
    targets: int = 0
    measured: int = 0
    failures: int = 0
    anomalies: int = 0
    interrupted: int = 0
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one measured record by its :func:`~kzprobe.verdict.outcome.outcome`."""
        self.measured += 1
        word = outcome(record)
        self.failures += word == outcomes.FAILURE
        self.anomalies += word == outcomes.ANOMALY
        self.interrupted += word == outcomes.INTERRUPTED


class Engine:
    """Runs sweeps: a bounded queue feeding ``limits.concurrency`` workers."""

    def __init__(
        self,
        prober: Prober,
        emit: Emit,
        *,
        wait_writable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        limits = prober.config.limits
        self.prober = prober
        self.emit = emit
        self.wait_writable = wait_writable
        self.bucket = TokenBucket(limits.rate, limits.burst)
        self.stopping = asyncio.Event()
        self._measuring: set[asyncio.Task[dict[str, Any]]] = set()
        self._queue: asyncio.Queue[Target | None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._measuring)

    @property
    def queue_depth(self) -> int:
        """Targets waiting for a worker in the running sweep (a metric; 0 between sweeps)."""
        queue = self._queue
        return 0 if queue is None else queue.qsize()

    def stop(self) -> None:
        """Stop starting measurements; those in flight go on."""
        self.stopping.set()

    def interrupt(self) -> None:
        """Cancel the measurements in flight; each still yields an ``interrupted`` record."""
        for task in list(self._measuring):
            task.cancel()

    async def sweep(self, targets: Iterable[Target]) -> SweepSummary:
        """Measure every target once (unless asked to stop); return the counts."""
        summary = SweepSummary(sweep_id=uuid.uuid4().hex[:12])
        workers = max(1, self.prober.config.limits.concurrency)
        queue: asyncio.Queue[Target | None] = asyncio.Queue(maxsize=workers * 4)
        self._queue = queue
        tasks = [asyncio.create_task(self._worker(queue, summary)) for _ in range(workers)]
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
            self._queue = None
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

    async def _worker(self, queue: asyncio.Queue[Target | None], summary: SweepSummary) -> None:
        while (target := await queue.get()) is not None:
            if self.stopping.is_set():
                continue  # drain without measuring
            await self.bucket.acquire()
            if self.wait_writable is not None:
                await self.wait_writable()
                if self.stopping.is_set():
                    continue  # stopped while the writer was blocked: do not start now
            task = asyncio.create_task(self.prober.measure(target, sweep_id=summary.sweep_id))
            self._measuring.add(task)
            try:
                record = await task
            finally:
                self._measuring.discard(task)
            summary.add(record)
            await self.emit(record)
