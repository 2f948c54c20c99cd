"""The uploader: closed segments -> an OONI collector, at least once, bounded.

A feeder reads the closed segments after the cursor (:mod:`kzprobe.upload.outbox`) into a
bounded queue; ``max_in_flight`` workers submit one record each
(:mod:`kzprobe.upload.collector`); the cursor moves over the finished prefix and is saved
(atomically, fsync'd) by one saver task. What a reply means:

* 200: submitted.
* 429 and 503: wait for ``Retry-After`` (up to ``max_backoff``), then again.
* other 5xx, a timeout, a refused connection: the collector is unwell; every worker waits
  an exponential backoff (from 2 s, doubled per failure, with jitter, capped at
  ``max_backoff``), then the same record again. Retries go on while the daemon runs.
* other 4xx on an update: the report may have expired (the spec has the collector refuse a
  report id that is not open), so the report is opened again and the record sent once more;
  a second 4xx means the collector refuses the measurement: rejected (logged, counted),
  skipped, never retried. A 4xx on opening a report: the record's metadata is refused:
  rejected too.

Sent as written, minus a second scrub with ``[probe] public_ip`` (a no-op for a record the
daemon scrubbed; it covers records written before the address was configured). Anchor
records and records cut short at shutdown (``interrupted``) are skipped: they measure kzprobe,
not the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from kzprobe.config.model import Config
from kzprobe.upload.collector import CollectorClient, Reply, Template, template, update_body, where
from kzprobe.upload.outbox import Item, Position, SegmentReader, Window, load_cursor, save_cursor
from kzprobe.verdict.outcome import is_interrupted
from kzprobe.verdict.pipeline import compile_needles, scrub

log = structlog.get_logger("kzprobe.upload")

POLL_SECONDS = 5.0  # how often the directory is looked at for newly closed segments
FIRST_BACKOFF = 2.0
CLOSE_REPORT_TIMEOUT = 2.0  # seconds closing the open reports may take at shutdown
ANCHORS_GROUP = "anchors"


@dataclass(slots=True)
class UploadStats:
    """Counts the metrics thread reads (ints: a read needs no lock)."""

    submitted: int = 0
    rejected: int = 0
    skipped: int = 0
    retried: int = 0
    reports_opened: int = 0
    pending: int = 0


def backoff(failures: int, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1-based): 2, 4, 8 ... s with
    jitter, capped; a Retry-After counts up to the cap."""
    ceiling = min(cap, FIRST_BACKOFF * 2.0 ** min(failures - 1, 30))
    delay = random.uniform(ceiling / 2, ceiling)
    return min(cap, max(delay, retry_after or 0.0))


class Gate:
    """The shared backoff: one unwell collector makes every worker wait."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.failures = 0
        self.not_before = 0.0

    async def wait(self) -> None:
        """Sleep out the current backoff (a later failure's longer one is the next wait's)."""
        delay = self.not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def failed(self, retry_after: float | None) -> float:
        self.failures += 1
        delay = backoff(self.failures, self.cap, retry_after)
        self.not_before = max(self.not_before, time.monotonic() + delay)
        return delay

    def succeeded(self) -> None:
        self.failures = 0


class Reports:
    """One open report per template (what a record shares with its report)."""

    def __init__(self, client: CollectorClient, stats: UploadStats) -> None:
        self.client = client
        self.stats = stats
        self.open: dict[Template, str] = {}
        self._locks: dict[Template, asyncio.Lock] = {}

    async def get(self, fields: Template) -> str | Reply:
        """The template's report id, opening a report when there is none (a Reply: failed)."""
        lock = self._locks.setdefault(fields, asyncio.Lock())
        async with lock:
            if fields in self.open:
                return self.open[fields]
            reply = await self.client.open_report(fields)
            if not reply.ok:
                return reply
            report_id = str(reply.body["report_id"])
            self.open[fields] = report_id
            self.stats.reports_opened += 1
            log.info("upload_report_opened", report_id=report_id, test_name=dict(fields)[
                "test_name"])
            return report_id

    def expire(self, fields: Template, report_id: str) -> None:
        """Forget ``report_id`` (refused: expired or closed); the next get opens another."""
        if self.open.get(fields) == report_id:
            del self.open[fields]

    async def close_all(self) -> None:
        """Close the open reports (legacy in the spec; best effort, bounded)."""
        opened, self.open = list(self.open.values()), {}
        with_timeout = [self.client.close(report_id) for report_id in opened]
        try:
            async with asyncio.timeout(CLOSE_REPORT_TIMEOUT):
                await asyncio.gather(*with_timeout)
        except TimeoutError:
            log.info("upload_reports_left_open", count=len(opened))


def uploadable(record: Mapping[str, Any]) -> bool:
    """A target's finished measurement (not an anchor's, not one cut short at shutdown)."""
    annotations = record.get("annotations")
    group = annotations.get("kzprobe_group") if isinstance(annotations, dict) else None
    return group != ANCHORS_GROUP and not is_interrupted(record)


def _retryable(status: int | None) -> bool:
    return status is None or status in (429, 503) or status >= 500


class Uploader:
    """Submits every uploadable record of the closed segments to ``[upload] ooni_collector``."""

    def __init__(self, config: Config) -> None:
        self.config = config.upload
        self.collector = config.upload.ooni_collector
        self.directory = Path(config.output.dir)
        self.prefix = config.output.prefix
        self.needles = compile_needles(_public(config.probe.public_ip))
        self.stats = UploadStats()
        self.gate = Gate(self.config.max_backoff)
        self.window = Window(Position("", 0))
        self.reader: SegmentReader | None = None
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=self.config.max_in_flight)
        self.wake = asyncio.Event()
        self.dirty = asyncio.Event()
        self.idle = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._reports: Reports | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._save_lock = threading.Lock()
        self._saved: Position | None = None
        self._scans = 0  # directory scans the feeder started
        self._idle_scan = 0  # the last scan that found nothing left (and nothing in flight)

    async def start(self) -> None:
        cursor = await asyncio.to_thread(load_cursor, self.directory, self.collector,
                                         self.prefix)
        self.window = Window(cursor)
        self.reader = SegmentReader(self.directory, self.prefix, cursor)
        self._session = aiohttp.ClientSession()
        client = CollectorClient(self.collector, self._session, self.config.timeout)
        self._reports = Reports(client, self.stats)
        workers = [self._worker() for _ in range(self.config.max_in_flight)]
        self._tasks = [asyncio.create_task(coro, name="kzprobe-upload")
                       for coro in (self._feed(), self._save_loop(), *workers)]
        log.info("upload_started", collector=where(self.collector), cursor=cursor.segment,
                 line=cursor.line)
        if not self.needles:
            log.warning("upload_without_public_ip",
                        consequence="a record measured before the first helper answer keeps "
                                    "the probe's address and would be submitted with it",
                        fix="set [probe] public_ip")

    def nudge(self) -> None:
        """A segment may have closed: look now rather than at the next poll."""
        self.wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every closed record to be finished; True if done."""
        asked = self._scans  # a scan already running may have missed a just-closed segment
        try:
            async with asyncio.timeout(timeout):
                while self._idle_scan <= asked:
                    self.idle.clear()
                    self.nudge()
                    await self.idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float) -> None:
        """Finish what fits in ``timeout`` s, save the cursor, close reports; the rest stays
        in the segments for the next start."""
        if self._session is None:
            return
        drained = await self.drain(timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._save, self.window.cursor)
        if self._reports is not None:
            await self._reports.close_all()
        await self._session.close()
        self._session = None
        log.info("upload_stopped", drained=drained, submitted=self.stats.submitted,
                 rejected=self.stats.rejected, pending=self.stats.pending)

    # -- tasks

    async def _feed(self) -> None:
        """Hand out the closed segments' lines in order; wait for more when none are left."""
        assert self.reader is not None
        while True:
            self.wake.clear()  # before the scan: a nudge during it makes the next one at once
            self._scans += 1
            scan = self._scans
            items = await asyncio.to_thread(self.reader.batch, self.config.max_in_flight)
            self.stats.pending = self.reader.pending(self.window.cursor)
            if not items:
                if not len(self.window):
                    self._idle_scan = scan
                    self.idle.set()
                try:
                    async with asyncio.timeout(POLL_SECONDS):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                continue
            for item in items:
                self.window.add(item.position)
                await self.queue.put(item)

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self._submit(item)
            except Exception:  # a bug must not stop the uploader: logged, the record skipped
                log.exception("upload_record_failed", segment=item.position.segment,
                              line=item.position.line)
                self.stats.skipped += 1
            if self.window.finish(item.position):
                self.dirty.set()
            if not len(self.window) and self.queue.empty():
                self.wake.set()  # the feeder looks again (and says idle if nothing is left)

    async def _save_loop(self) -> None:
        """Save the cursor whenever it moved; one write at a time, coalescing moves."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            cursor = self.window.cursor
            try:
                await asyncio.to_thread(self._save, cursor)
            except OSError as exc:  # a full disk: the records will be sent again, not lost
                log.warning("upload_cursor_not_saved", error=str(exc))
            if self.reader is not None:
                self.stats.pending = self.reader.pending(self.window.cursor)

    def _save(self, cursor: Position) -> None:
        """One writer of the cursor file at a time (a cancelled saver's thread runs on)."""
        with self._save_lock:
            if self._saved is not None and cursor <= self._saved:
                return  # never move the saved cursor back (a late, cancelled save)
            save_cursor(self.directory, self.collector, cursor)
            self._saved = cursor

    # -- one record

    async def _submit(self, item: Item) -> None:
        record = _record(item)
        if record is None or not uploadable(record):
            self.stats.skipped += 1
            return
        fields = template(record)
        if fields is None:
            self._rejected(item, None, "metadata outside the spec's patterns")
            return
        content = scrub(record, self.needles) if self.needles else record
        await self._send(item, fields, content)

    async def _send(self, item: Item, fields: Template, content: dict[str, Any]) -> None:
        assert self._reports is not None
        reports, reopened = self._reports, False
        while True:
            await self.gate.wait()
            report = await reports.get(fields)
            if isinstance(report, Reply):
                if self._retry(report, "open"):
                    continue
                self._rejected(item, report, "the collector refused to open a report")
                return
            reply = await reports.client.update(report, update_body(content, report))
            if reply.ok:
                self.gate.succeeded()
                self.stats.submitted += 1
                return
            if self._retry(reply, "update"):
                continue
            if not reopened:  # the report may have expired: open another, send once more
                reports.expire(fields, report)
                reopened = True
                log.info("upload_report_refused", report_id=report, status=reply.status)
                continue
            self._rejected(item, reply, "the collector refused the measurement")
            return

    def _retry(self, reply: Reply, step: str) -> bool:
        """Back off for a retryable reply and say so; False for a refusal (4xx)."""
        if not _retryable(reply.status):
            return False
        self.stats.retried += 1
        delay = self.gate.failed(reply.retry_after)
        log.warning("upload_retry", step=step, status=reply.status, error=reply.error or None,
                    retry_in=round(delay, 2))
        return True

    def _rejected(self, item: Item, reply: Reply | None, why: str) -> None:
        self.stats.rejected += 1
        body = dict(reply.body) if reply is not None else {}
        log.warning("upload_rejected", segment=item.position.segment, line=item.position.line,
                    status=reply.status if reply else None, reason=why,
                    error=str(body.get("error", ""))[:200] or None)


def _public(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The configured addresses the scrubber would use (loopback and unspecified never)."""
    keep = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified):
            keep.append(text)
    return tuple(keep)


def _record(item: Item) -> dict[str, Any] | None:
    try:
        value = orjson.loads(item.raw)
    except orjson.JSONDecodeError:
        log.warning("upload_line_unreadable", segment=item.position.segment,
                    line=item.position.line)
        return None
    return value if isinstance(value, dict) else None
