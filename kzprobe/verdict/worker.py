"""Judging measurements (OONI keys, interference codes) in a worker process.

Why a process: analysis is pure Python, 0.1–0.5 ms per measurement (fingerprint scans of
bodies, certificate checks). On the measuring loop it costs a quarter of the loop's CPU
and, worse, delays every other measurement's timers while it runs: the timings that
throttling verdicts are made of. In a process of its own it runs on another core, and a
record that sends the analysis into a loop or a crash costs that record its verdict
(``x_analysis_failure``), not the daemon.

Wire format between the two: frames of a 4-byte big-endian length and an orjson body.
The first frame to the worker is the pickled :class:`~kzprobe.config.Config`, answered by
``[]`` once its fingerprints are built; then each request is ``[id, test_name, url,
test_keys]`` and each answer ``[id, changed_keys, verdict, failure]``, the verdict as
``[blocking, codes]`` (:meth:`~kzprobe.verdict.verdicts.WebVerdict.wire`), typed again by
``test_name`` on the daemon's side. The worker exits when its stdin closes (the daemon
stopped or was killed).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import pickle
import signal
import struct
import sys
from typing import IO, Any, cast

import orjson
import structlog

from kzprobe.config import Config
from kzprobe.errors import classify
from kzprobe.verdict.analyzer import Analyzer, judge
from kzprobe.verdict.verdicts import Verdict, from_wire

log = structlog.get_logger("kzprobe.verdict.worker")

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024  # records are bounded far below this (body caps)
DELIVER_BATCH = 64  # verdicts handed to waiting measurements per loop turn
MAX_STARTS, RESTART_WINDOW = 10, 600.0  # more starts than this in the window: give up
_ABSENT = object()


class WorkerGone(Exception):
    """The analysis worker exited or was stopped before answering."""


class WorkerUnavailable(WorkerGone):
    """Workers keep dying: MAX_STARTS started within RESTART_WINDOW seconds."""


def frame(body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise ValueError(f"analysis frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def take_frames(buffer: bytearray) -> list[bytes]:
    """Remove the complete frames at the start of ``buffer`` and return their bodies.

    The one parser for both ends; a length above MAX_FRAME is not our peer speaking.
    """
    bodies, offset = [], 0
    while len(buffer) - offset >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, offset)
        if size > MAX_FRAME:
            raise ValueError(f"analysis frame of {size} bytes exceeds {MAX_FRAME}")
        end = offset + _HEADER.size + size
        if len(buffer) < end:
            break
        bodies.append(bytes(buffer[offset + _HEADER.size:end]))
        offset = end
    del buffer[:offset]
    return bodies


# ----------------------------------------------------------------------------- worker side


class _Frames:
    """Frames from a file descriptor, read in large chunks.

    ``next_frame(block=False)`` says whether a whole request is already here, so the
    worker can answer everything that queued up before one write (one wake-up of the
    daemon's loop per batch, not per record).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._ready: collections.deque[bytes] = collections.deque()
        self._eof = False

    def next_frame(self, *, block: bool) -> bytes | None:
        while not self._ready:
            if self._eof or not block:
                return None
            chunk = os.read(self._fd, 1 << 20)
            self._eof = not chunk
            self._buffer += chunk
            try:
                self._ready.extend(take_frames(self._buffer))
            except ValueError:  # not our peer: stop
                self._eof = True
        return self._ready.popleft()


def _answer(analyzer: Analyzer, request: bytes) -> bytes:
    rid, test_name, url, keys = orjson.loads(request)
    before = dict(keys)
    try:
        verdict = judge(analyzer, test_name, keys, url)
        changed = {k: v for k, v in keys.items() if before.get(k, _ABSENT) is not v}
        return orjson.dumps([rid, changed, verdict.wire(), None])
    except Exception as exc:  # the record keeps its observations and says why
        return orjson.dumps([rid, None, None, classify(exc)])


def serve(requests: int, answers: IO[bytes]) -> None:
    """The worker's loop until stdin closes: answer what has arrived, then write and wait."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon drains first, then closes us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    frames = _Frames(requests)
    first = frames.next_frame(block=True)
    if first is None:
        return
    config: Config = pickle.loads(first)
    analyzer = Analyzer(config)
    answers.write(frame(b"[]"))  # ready
    answers.flush()
    while (request := frames.next_frame(block=True)) is not None:
        while request is not None:
            answers.write(frame(_answer(analyzer, request)))
            request = frames.next_frame(block=False)
        answers.flush()


# ----------------------------------------------------------------------------- daemon side


class _Link(asyncio.SubprocessProtocol):
    """One worker: batches requests into its stdin, parses its answers, times them out.

    Requests written in one loop iteration go out in one write; one timer watches the
    oldest request (all share one timeout, so the oldest expires first).
    """

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.pending: dict[int, tuple[asyncio.Future[list[Any]], float]] = {}
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.alive = True
        self._transport: asyncio.SubprocessTransport | None = None
        self._buffer = bytearray()
        self._inbox: collections.deque[bytes] = collections.deque()
        self._delivering = False
        self._outbox: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.SubprocessTransport, transport)

    def send(self, rid: int, body: bytes) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self.pending[rid] = (future, self.loop.time() + self.timeout)
        if not self._outbox:
            self.loop.call_soon(self._flush)
        self._outbox.append(frame(body))
        if self._watchdog is None:
            self._arm()
        return future

    def _flush(self) -> None:
        if self._transport is not None and self.alive:
            _stdin(self._transport).write(b"".join(self._outbox))
        self._outbox.clear()

    def _arm(self) -> None:
        if self.pending and self.alive:
            _, deadline = next(iter(self.pending.values()))
            self._watchdog = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._watchdog = None
        now = self.loop.time()
        expired = [rid for rid, (_, deadline) in self.pending.items() if deadline <= now]
        for rid in expired:
            future, _ = self.pending.pop(rid)
            if not future.done():
                future.set_exception(TimeoutError("no verdict from the analysis worker"))
        if expired:
            self.kill()  # it is stuck on something; the rest it held fail when it exits
        else:
            self._arm()

    def kill(self, event: str = "analysis_worker_stuck") -> None:
        if self.alive and self._transport is not None:
            log.warning(event, timeout_s=self.timeout)
            self.alive = False
            self._transport.kill()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        self._buffer += data
        try:
            self._inbox.extend(take_frames(self._buffer))
        except ValueError:  # garbage on its stdout: a worker we cannot trust any more
            self.kill("analysis_worker_garbled")
            return
        if self._inbox and not self._delivering:
            self._delivering = True
            self.loop.call_soon(self._deliver_some)

    def _deliver_some(self) -> None:
        """Resolve at most DELIVER_BATCH answers per loop turn.

        A worker that was behind answers thousands at once; resolving them together would
        wake thousands of measurements in one turn and hold every timer back (the timings
        throttling verdicts use), so the rest wait for the next turn.
        """
        for _ in range(min(DELIVER_BATCH, len(self._inbox))):
            self._deliver(self._inbox.popleft())
        if self._inbox:
            self.loop.call_soon(self._deliver_some)
        else:
            self._delivering = False

    def _deliver(self, body: bytes) -> None:
        answer = orjson.loads(body)
        if not answer:
            if not self.ready.done():
                self.ready.set_result(None)
            return
        entry = self.pending.pop(answer[0], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(answer)

    def process_exited(self) -> None:
        self.alive = False
        while self._inbox:  # answers that arrived before the exit still count
            self._deliver(self._inbox.popleft())
        if self._watchdog is not None:
            self._watchdog.cancel()
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(WorkerGone("analysis worker exited"))
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(WorkerGone("analysis worker exited while starting"))
            self.ready.exception()  # seen: only start() awaits it, judge() may not have
        if not self.closed.done():
            self.closed.set_result(None)


class ProcessJudge:
    """Sends measurements to one analysis worker process, started on first use.

    A worker that exits is replaced on the next request; one that takes longer than
    ``timeout`` for an answer is killed (it is looping on something), and the requests it
    held get a failure instead of a verdict.
    """

    def __init__(self, config: Config, *, timeout: float) -> None:
        self._config = config
        self._timeout = timeout
        self._ids = itertools.count()
        self._transport: asyncio.SubprocessTransport | None = None
        self._link: _Link | None = None
        self._starting: asyncio.Lock | None = None
        self._starts: collections.deque[float] = collections.deque(maxlen=MAX_STARTS)
        self.started = 0  # workers started so far (tests, metrics)
        self.usable = True  # False once workers kept dying (WorkerUnavailable)

    async def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start the worker now (else on first use); with ``wait``, until its fingerprints
        are built. Without, the first requests queue in the pipe behind the build, and a
        worker that cannot start is found by the first judgement (which then judges inline)."""
        link = await self._worker()
        if wait:
            async with asyncio.timeout(timeout):
                await asyncio.shield(link.ready)

    async def judge(self, test_name: str, test_keys: dict[str, Any],
                    url: str) -> tuple[dict[str, Any], Verdict]:
        """``test_keys`` with the verdict keys filled in, and the verdict.

        The worker answers with the keys it added or replaced (analysis only sets
        top-level keys), so only those cross back.
        """
        link = self._link if self._link is not None and self._link.alive else await self._worker()
        rid = next(self._ids)
        future = link.send(rid, orjson.dumps([rid, test_name, url, test_keys]))
        try:
            _, changed, verdict, failure = await future
        finally:
            link.pending.pop(rid, None)
        if failure is not None:
            raise _AnalysisFailed(failure)
        test_keys.update(changed)
        return test_keys, from_wire(test_name, verdict)

    async def _worker(self) -> _Link:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._link is None or not self._link.alive:
                await self._start()
        assert self._link is not None
        return self._link

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(self._starts) == MAX_STARTS and now - self._starts[0] < RESTART_WINDOW:
            self.usable = False
            raise WorkerUnavailable(
                f"{MAX_STARTS} analysis workers started within {RESTART_WINDOW:g} s")
        self._starts.append(now)
        transport, link = await loop.subprocess_exec(
            lambda: _Link(self._timeout), sys.executable, "-m", "kzprobe.verdict.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        _stdin(transport).write(frame(pickle.dumps(self._config)))
        self._transport, self._link = transport, link
        self.started += 1
        if self.started > 1:
            log.warning("analysis_worker_restarted", workers_started=self.started)

    async def aclose(self) -> None:
        """Close the worker's stdin (it exits), waiting a bounded time before killing it."""
        transport, link = self._transport, self._link
        if transport is None or link is None:
            return
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(link.closed)
        except TimeoutError:
            transport.kill()
        transport.close()


def _stdin(transport: asyncio.SubprocessTransport) -> asyncio.WriteTransport:
    # uvloop's pipe transports do not subclass asyncio.WriteTransport; same interface
    return cast(asyncio.WriteTransport, transport.get_pipe_transport(0))


class _AnalysisFailed(Exception):
    """The worker's analysis raised; ``args[0]`` is the OONI failure string it classified."""


def failure_of(exc: BaseException) -> str:
    """The ``x_analysis_failure`` string for an exception from :meth:`ProcessJudge.judge`."""
    if isinstance(exc, _AnalysisFailed):
        return str(exc.args[0])
    return classify(exc)


if __name__ == "__main__":
    with open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False) as out:
        serve(sys.stdin.fileno(), out)
