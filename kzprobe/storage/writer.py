"""The blocking segment writer, used only from the sink's I/O thread."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kzprobe.config import OutputConfig
from kzprobe.storage import codecs
from kzprobe.storage.files import COMPRESSED_SUFFIXES, create, fsync_dir, publish
from kzprobe.storage.naming import PART_SUFFIX, SegmentName

_MAX_WRITE = 8 << 20  # uncompressed bytes per chunk: one compress call, one os.write


@dataclass(slots=True)
class SinkStats:
    """Plain counters the metrics layer reads; updated in place by the sink."""

    records_written: int = 0
    bytes_written: int = 0
    segments_rotated: int = 0
    segments_compressed: int = 0
    write_errors: int = 0
    last_error: str | None = None
    blocked: bool = False
    records_lost: int = 0  # accepted, then given up on at close (the disk stayed full)


@dataclass(slots=True)
class _Chunk:
    """Bytes for the open segment and the backlog records they carry, written all or nothing."""

    data: bytes
    records: int
    size: int  # uncompressed bytes of those records


@dataclass(slots=True)
class _Segment:
    """The open ``.part`` file."""

    fd: int
    part: Path
    opened: float  # time.monotonic()
    encoder: codecs.Encoder | None  # None: plain, or the stream was finished
    size: int = 0  # uncompressed bytes of whole records written
    disk: int = 0  # bytes on disk that end at a record (or flush point): where a retry resumes
    records: int = 0
    torn: bool = False  # a failed write may have left bytes past `disk`
    finished: bool = False  # the compressed stream's end is written or pending: close next
    pending: _Chunk | None = None  # prepared, not yet (wholly) written; retried first


class SegmentWriter:
    """The blocking half: used only from the sink's I/O thread, one call at a time.

    Records accepted but not yet on disk live in ``_backlog``; every operation can be
    retried after an OSError without losing or duplicating one.
    """

    def __init__(self, output: OutputConfig, probe_id: str, stats: SinkStats) -> None:
        self._out = output
        self.probe_id = probe_id  # set by the sink's start() before the first write
        self._pid = os.getpid()
        self._stats = stats
        self._seq = 0
        self._seg: _Segment | None = None
        self._backlog: deque[bytes] = deque()
        self._closed: list[Path] = []  # fsynced and closed .part files not yet published
        self._last_sync = 0.0
        self._dirty = False
        self._method: codecs.Method | None = None if output.compress == "none" else output.compress

    @property
    def backlog_records(self) -> int:
        return len(self._backlog)

    def run(self, op: Callable[[], object]) -> Exception | None:
        """Run one operation; return its error, if any."""
        try:
            op()
        except Exception as exc:  # any failure blocks and retries; nothing accepted is dropped
            return exc
        return None

    def write_lines(self, lines: Iterable[bytes]) -> None:
        self._backlog.extend(lines)
        self.drain()

    def drain(self) -> None:
        """Write the backlog, rotating by size and age between records, fsync when due."""
        self._publish_closed()
        while self._backlog:
            seg = self._seg
            if seg is not None and seg.records and self._must_rotate(seg, len(self._backlog[0])):
                self._close_segment()
            self._write_chunk(self._ensure_open())
        if self._seg is not None and self._seg.records and self._aged(self._seg):
            self._close_segment()
        self._sync_if_due()

    def rotate(self) -> None:
        """Write the backlog and close the open segment now."""
        self.drain()
        if self._seg is not None:
            self._close_segment()

    def next_due(self, now: float) -> float | None:
        """Seconds until an fsync or an age rotation is due; None while nothing is pending."""
        if self._seg is None or not self._seg.records:
            return None
        due = self._seg.opened + self._out.rotate_seconds
        if self._dirty:
            due = min(due, self._last_sync + self._out.fsync_interval)
        return max(0.0, due - now)

    def abandon(self) -> int:
        """Give up on the backlog, keep what is on disk; return how many records were lost."""
        lost = len(self._backlog)
        self._backlog.clear()
        seg = self._seg
        if seg is not None and seg.pending is not None and seg.pending.records:
            seg.pending = None  # its records were the backlog's first
            if seg.encoder is not None:  # the stream holds them: only recovery can end it
                self._leave_to_recovery(seg)
                return lost
        with contextlib.suppress(Exception):
            self.rotate()
        if self._seg is not None:  # could not even close it: leave the .part to recovery
            self._leave_to_recovery(self._seg)
        return lost

    # -- internals

    def _leave_to_recovery(self, seg: _Segment) -> None:
        """Close the fd, unpublished: the next start trims (or repairs) and publishes it."""
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        self._seg = None

    def _aged(self, seg: _Segment) -> bool:
        return time.monotonic() - seg.opened >= self._out.rotate_seconds

    def _must_rotate(self, seg: _Segment, next_len: int) -> bool:
        return (seg.finished or seg.size + next_len > self._out.rotate_bytes
                or self._aged(seg))

    def _ensure_open(self) -> _Segment:
        if self._seg is None:
            self._seg = self._open_new()
        return self._seg

    def _open_new(self) -> _Segment:
        for _ in range(10_000):
            self._seq += 1
            codec = COMPRESSED_SUFFIXES[self._method] if self._method else ""
            name = SegmentName.new(self._out.prefix, self.probe_id, self._pid, self._seq, codec,
                                   PART_SUFFIX)
            part = self._out.dir / str(name)
            try:
                fd = create(part, os.O_WRONLY | os.O_APPEND)
            except FileExistsError:
                continue
            try:
                fsync_dir(self._out.dir)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(part)
                raise
            now = time.monotonic()
            self._last_sync = now
            encoder = codecs.Encoder(self._method) if self._method else None
            return _Segment(fd=fd, part=part, opened=now, encoder=encoder)
        raise FileExistsError(errno.EEXIST, "no free segment name", str(self._out.dir))

    def _chunk(self, seg: _Segment) -> tuple[int, int]:
        """How many backlog records (at least one) go into this write, and their size."""
        room = self._out.rotate_bytes - seg.size
        count = total = 0
        for rec in self._backlog:
            grown = total + len(rec)
            if count and (grown > room or grown > _MAX_WRITE):
                break
            count, total = count + 1, grown
        return count, total

    def _write_chunk(self, seg: _Segment) -> None:
        if seg.pending is None:
            seg.pending = self._prepare(seg)
        self._write_pending(seg)

    def _prepare(self, seg: _Segment) -> _Chunk:
        """The next records as the bytes to append (compressed up to a flush point)."""
        count, total = self._chunk(seg)
        data = b"".join(itertools.islice(self._backlog, count))
        if seg.encoder is not None:
            data = seg.encoder.chunk(data)
        return _Chunk(data=data, records=count, size=total)

    def _write_pending(self, seg: _Segment) -> None:
        """Append the pending chunk whole, or cut the file back to where it was and raise."""
        chunk = seg.pending
        assert chunk is not None
        if seg.torn:
            self._trim(seg)
        done = 0
        try:
            with memoryview(chunk.data) as view:
                while done < len(view):
                    done += os.write(seg.fd, view[done:])
        except OSError:
            seg.torn = True
            with contextlib.suppress(OSError):
                self._trim(seg)
            raise
        seg.pending = None
        seg.disk += len(chunk.data)
        self._accept(seg, chunk)

    def _accept(self, seg: _Segment, chunk: _Chunk) -> None:
        """Count the chunk's records (the backlog's first) as written."""
        for _ in range(chunk.records):
            self._backlog.popleft()
        seg.size += chunk.size
        seg.records += chunk.records
        self._stats.records_written += chunk.records
        self._stats.bytes_written += chunk.size
        self._dirty = True

    def _trim(self, seg: _Segment) -> None:
        """Cut a torn tail off before appending again, so no half record sits mid-file."""
        os.ftruncate(seg.fd, seg.disk)
        seg.torn = False

    def _end_stream(self, seg: _Segment) -> None:
        """Write what is pending and, for a compressed stream with records, its end."""
        if seg.pending is not None:
            self._write_pending(seg)
        elif seg.torn:
            self._trim(seg)
        if seg.encoder is not None and seg.records:
            seg.pending = _Chunk(data=seg.encoder.finish(), records=0, size=0)
            seg.encoder = None
            seg.finished = True
            self._write_pending(seg)

    def _sync_if_due(self) -> None:
        now = time.monotonic()
        seg = self._seg
        if seg is not None and self._dirty and now - self._last_sync >= self._out.fsync_interval:
            os.fdatasync(seg.fd)
            self._last_sync = now
            self._dirty = False

    def _close_segment(self) -> None:
        seg = self._seg
        assert seg is not None
        self._end_stream(seg)
        if seg.records:
            os.fsync(seg.fd)
            self._closed.append(seg.part)
        with contextlib.suppress(OSError):  # Linux releases the fd even when close fails
            os.close(seg.fd)
        self._seg = None
        self._dirty = False
        if not seg.records:  # opened, but nothing made it to disk: never publish it
            with contextlib.suppress(OSError):
                os.unlink(seg.part)
        self._publish_closed()

    def _publish_closed(self) -> None:
        while self._closed:
            final = publish(self._closed[0])
            self._closed.pop(0)
            self._seq = max(self._seq, self._seq_of(final))
            self._stats.segments_rotated += 1
            if codecs.method_of(final.name) is not None:
                self._stats.segments_compressed += 1

    @staticmethod
    def _seq_of(path: Path) -> int:
        name = SegmentName.parse(path.name)
        return name.seq if name is not None else 0
