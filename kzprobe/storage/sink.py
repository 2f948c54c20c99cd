"""The one writer of measurement files: NDJSON segments that survive crashes and full disks.

One asyncio task drains a bounded buffer and hands batches to a one-thread executor, so
compression, ``os.write`` and ``fdatasync`` never stall the event loop. Records go to
``<prefix>-<UTC start>-<probe id>-<pid>-<seq>.ndjson.gz.part`` (``.zst``, or plain with
``compress = "none"``; O_APPEND), compressed as they are written: each batch ends at a
flush point (:mod:`kzprobe.storage.codecs`), so a crash loses at most the batch being written. A
segment is closed between records by size or age with end of stream → fsync → close →
``link`` (never ``rename``, which would silently overwrite a closed segment) → unlink →
fsync(dir). Startup recovery trims or repairs whatever a crash left behind and
publishes it.

A failed write (ENOSPC, EROFS, EDQUOT, ...) is a state, not an error: the file is cut back
to its last whole batch, the rest stays in memory, ``wait_writable()`` blocks (so the
scheduler stops probing), and the write is retried until it works.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from kzprobe.config import OutputConfig, valid_probe_id
from kzprobe.errors import KzprobeError
from kzprobe.storage.buffer import Buffer, Request, settle
from kzprobe.storage.files import (
    COMPRESSED_SUFFIXES,
    DIR_MODE,
    FILE_MODE,
    compress_segment,
    describe,
    require_codec,
)
from kzprobe.storage.recovery import (
    PROBE_ID_FILE,
    Recovery,
    lock_dir,
    recover_dir,
    resolve_probe_id,
)
from kzprobe.storage.writer import SegmentWriter, SinkStats

log = structlog.get_logger("kzprobe.storage.sink")

__all__ = ["COMPRESSED_SUFFIXES", "DIR_MODE", "FILE_MODE", "PROBE_ID_FILE", "NdjsonSink",
           "SinkStats", "compress_segment", "recover_dir", "resolve_probe_id"]

T = TypeVar("T")

_BATCH_BYTES = 8 << 20  # bytes taken from the buffer per executor round trip (few GIL trips)
_LINGER = 0.05  # seconds a small batch waits for company (see NdjsonSink._next_item)
_LINGER_BELOW = 64 << 10  # ... if it is smaller than this
_ABANDON_GRACE = 5.0  # seconds aclose() waits for the I/O thread after giving up


class _GiveUp(Exception):
    """Raised inside the writer task when aclose() stops waiting for a blocked disk."""


class NdjsonSink:
    """The only writer of measurement records.

    ``write()`` only appends to a bounded buffer (no await while there is room); one task
    hands what has gathered to a one-thread executor in large batches. When the buffer is
    full ``write()`` waits: that is the backpressure that pauses probing.
    """

    def __init__(self, output: OutputConfig, *, queue_size: int = 4096,
                 queue_bytes: int = 32 << 20, probe_id: str | None = None,
                 retry_interval: float = 2.0) -> None:
        if probe_id is not None and not valid_probe_id(probe_id):
            raise ValueError(f"not a probe id: {probe_id!r}")
        self.stats = SinkStats()
        self._out = output
        self.probe_id = probe_id  # None: the output dir's stored id, known after start()
        self._retry_interval = retry_interval
        self._buffer = Buffer(max_records=queue_size, max_bytes=queue_bytes)
        self._writer = SegmentWriter(output, probe_id or "", self.stats)
        self._io_pool: ThreadPoolExecutor | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._accepting = True  # False once buffered records would no longer be written
        self._stop = asyncio.Event()
        self._blocked_since = 0.0

    @property
    def is_blocked(self) -> bool:
        """True while writes fail (disk full, read-only, ...) and are being retried."""
        return self.stats.blocked

    # -- lifecycle

    async def start(self) -> list[Path]:
        """Lock the directory, recover a crash's leftovers, start writing.

        Returns the closed segments recovered from ``.part`` files. Compression of
        leftovers is awaited here, so a restart resumes with a clean directory.
        """
        if self._state != "new":
            raise RuntimeError("NdjsonSink.start() called twice")
        require_codec(self._out.compress)
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="kzprobe-sink")
        try:
            self._lock_fd = await self._io(lock_dir, self._out.dir, self._out.prefix)
            if self.probe_id is None:
                self.probe_id = await self._io(resolve_probe_id, self._out.dir)
            self._writer.probe_id = self.probe_id
            found = await self._io(recover_dir, self._out.dir, self._out.prefix)
        except OSError as exc:
            await self._release()
            raise KzprobeError(f"{self._out.dir}: recovery failed: {describe(exc)}") from None
        except BaseException:
            await self._release()
            raise
        recovered = await self._compress_leftovers(found)
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="kzprobe-sink")
        self._task.add_done_callback(self._writer_stopped)
        log.info("sink_started", dir=str(self._out.dir), recovered=len(recovered),
                 compress=self._out.compress)
        return recovered

    async def aclose(self, timeout: float = 30.0) -> None:
        """Write everything queued, close and publish the segment, finish compressions.

        While the disk stays full this retries until ``timeout`` and then gives up,
        logging how many accepted records were lost.
        """
        if self._state != "running":
            return
        self._state = "closing"
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._request("close")
        except TimeoutError:
            await self._abandon()
        await self._release_producers()
        await self._release()
        self._state = "closed"
        log.info("sink_closed", records=self.stats.records_written,
                 segments=self.stats.segments_rotated)

    async def rotate(self, timeout: float = 30.0) -> None:
        """Close the current segment now, after every record already written (SIGUSR1)."""
        self._check_running()
        async with asyncio.timeout(timeout):
            await self._request("rotate")

    # -- producers

    async def write(self, record: bytes) -> None:
        """Buffer one serialised record (with or without its newline); waits while full."""
        self._check_running()
        line = record if record.endswith(b"\n") else record + b"\n"
        if len(line) == 1 or line.find(b"\n", 0, len(line) - 1) != -1:
            raise ValueError("a record must be one non-empty line of JSON")
        buffer = self._buffer
        while buffer.full() and self._accepting:
            await buffer.wait_room()
        if not self._accepting:
            raise RuntimeError("sink closed before the record could be written")
        buffer.push(line)

    async def wait_writable(self) -> None:
        """Return at once unless writes are failing; then wait until they work again.

        Deliberately without a deadline: the scheduler calls it before each measurement,
        and a probe whose result cannot be recorded should not run.
        """
        await self._writable.wait()

    # -- the writer task

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = await self._next_item()
                if item is None:
                    await self._commit(self._writer.drain, self._writer.drain)
                elif not await self._handle(item):
                    return
        except _GiveUp:
            return
        finally:
            self._refuse()  # nobody will write what is buffered from now on

    async def _handle(self, item: bytes | Request) -> bool:
        """Write one batch and at most one request; False once the sink is closed."""
        writer = self._writer
        batch, request = self._gather(item)
        if batch:
            await self._commit(functools.partial(writer.write_lines, batch), writer.drain)
        if request is None:
            return True
        requests = [request]
        try:
            if request.kind == "close":
                requests += await self._write_stragglers()
            await self._commit(writer.rotate, writer.rotate)
        except BaseException:
            for req in requests:
                settle(req.done, ok=False)
            raise
        for req in requests:
            settle(req.done, ok=True)
        return request.kind != "close"

    async def _write_stragglers(self) -> list[Request]:
        """At close, write what producers that were waiting for space still queue.

        Each get wakes a waiting producer, which puts its record one loop turn later;
        so repeat until a round, after yielding, finds the queue empty.
        """
        requests: list[Request] = []
        while self._buffer:
            batch: list[bytes] = []
            for item in self._buffer.take_all():
                if isinstance(item, Request):
                    requests.append(item)
                else:
                    batch.append(item)
            if batch:
                await self._commit(functools.partial(self._writer.write_lines, batch),
                                   self._writer.drain)
            await asyncio.sleep(0)
        return requests

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """A writer task that dies of a bug must not look healthy: block and say so."""
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        log.error("sink_writer_crashed", error=describe(error))
        self._mark_blocked(error if isinstance(error, Exception) else RuntimeError(str(error)))

    async def _next_item(self) -> bytes | Request | None:
        """The next buffered item, or None when an fsync or age rotation falls due first.

        A few records wait ``_LINGER`` for others (unless a request is waiting or the buffer
        is full): one executor round trip per record cost the event loop ~0.1 ms each at a
        few hundred records a second, and records are fsynced only every second anyway.
        """
        buffer = self._buffer
        try:
            async with asyncio.timeout(self._writer.next_due(time.monotonic())):
                await buffer.wait_ready()
        except TimeoutError:
            return None
        if not (buffer.requests or buffer.full() or buffer.size >= _LINGER_BELOW
                or self._stop.is_set()):
            await asyncio.sleep(_LINGER)
        return buffer.pop()

    def _gather(self, first: bytes | Request) -> tuple[list[bytes], Request | None]:
        """Batch what is already buffered, stopping at a request so ordering holds."""
        if isinstance(first, Request):
            return [], first
        return self._buffer.take_batch(first, _BATCH_BYTES)

    async def _commit(self, op: Callable[[], object], retry: Callable[[], object]) -> None:
        """Run ``op``; on failure block, and run ``retry`` every retry_interval until it works."""
        error = await self._io(self._writer.run, op)
        while True:
            if error is None:
                self._mark_writable()
                return
            self._mark_blocked(error)
            if await self._stopped_within(self._retry_interval):
                raise _GiveUp
            error = await self._io(self._writer.run, retry)

    async def _stopped_within(self, delay: float) -> bool:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    def _mark_blocked(self, error: Exception) -> None:
        self.stats.write_errors += 1
        self.stats.last_error = describe(error)
        if self.stats.blocked:
            log.debug("sink_retry_failed", error=self.stats.last_error)
            return
        self.stats.blocked = True
        self._writable.clear()
        self._blocked_since = time.monotonic()
        log.warning("sink_blocked", error=self.stats.last_error, dir=str(self._out.dir),
                    pending=self._writer.backlog_records + self._buffer.records,
                    retry_interval=self._retry_interval)

    def _mark_writable(self) -> None:
        if not self.stats.blocked:
            return
        self.stats.blocked = False
        self._writable.set()
        log.info("sink_resumed", blocked_seconds=round(time.monotonic() - self._blocked_since, 3))

    # -- compression

    async def _compress_leftovers(self, found: Recovery) -> list[Path]:
        """Compress what a crash left plain; return the recovered segments' current paths."""
        recovered = list(found.published)
        if self._out.compress == "none":
            return recovered
        for path in found.uncompressed:  # includes the segments just published
            try:
                done = await self._io(compress_segment, path, self._out.compress)
            except OSError as exc:  # e.g. disk full: stays plain, compressed on a later start
                log.warning("sink_compress_failed", path=str(path), error=describe(exc))
                continue
            self.stats.segments_compressed += 1
            recovered = [done if p == path else p for p in recovered]
        return recovered

    # -- plumbing

    async def _request(self, kind: Literal["rotate", "close"]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.push(Request(kind=kind, done=done))
        await done

    async def _abandon(self) -> None:
        """The deadline passed while blocked: stop retrying and count what is lost.

        The writer task is asked to stop rather than cancelled, so a batch handed to the
        I/O thread is never dropped on the floor between queue and backlog.
        """
        self._refuse()  # from here on, write() refuses instead of accepting
        lost = self._drop_queued()  # everything still buffered was accepted
        self._stop.set()
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=_ABANDON_GRACE)
        if not done:  # the I/O thread hangs (a dead disk): stop waiting for it
            self._task.cancel()
        try:
            async with asyncio.timeout(_ABANDON_GRACE):
                lost += await self._io(self._writer.abandon)
        except TimeoutError:
            lost += self._writer.backlog_records
        self.stats.records_lost += lost
        log.error("sink_records_lost", lost=lost, error=self.stats.last_error,
                  dir=str(self._out.dir))

    def _drop_queued(self) -> int:
        """Empty the buffer, failing requests; return how many records were dropped."""
        dropped = 0
        for item in self._buffer.take_all():
            if isinstance(item, Request):
                settle(item.done, ok=False)
            else:
                dropped += 1
        return dropped

    def _refuse(self) -> None:
        """Accept no more records; producers waiting for room wake up and get an error."""
        self._accepting = False
        self._buffer.release_waiters()

    async def _release_producers(self) -> None:
        """Wake producers still waiting for room; write() then raises for them."""
        self._refuse()
        self._drop_queued()
        await asyncio.sleep(0)

    async def _release(self) -> None:
        if self._io_pool is not None:
            self._io_pool.shutdown(wait=False)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(f"sink is {self._state}, not running")

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)
