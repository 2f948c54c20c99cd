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
import contextlib
import errno
import fcntl
import functools
import importlib
import itertools
import mmap
import os
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import structlog

from kzprobe.config import MAX_PROBE_ID, Compression, OutputConfig, valid_probe_id
from kzprobe.errors import ConfigError, KzprobeError
from kzprobe.storage import codecs
from kzprobe.storage.naming import CODEC_SUFFIXES, PART_SUFFIX, TMP_SUFFIX, SegmentName
from kzprobe.storage.segments import MAX_LINE_BYTES

log = structlog.get_logger("kzprobe.storage.sink")

T = TypeVar("T")

COMPRESSED_SUFFIXES = codecs.SUFFIXES

_MAX_WRITE = 8 << 20  # uncompressed bytes per chunk: one compress call, one os.write
_BATCH_BYTES = 8 << 20  # bytes taken from the buffer per executor round trip (few GIL trips)
_LINGER = 0.05  # seconds a small batch waits for company (see NdjsonSink._next_item)
_LINGER_BELOW = 64 << 10  # ... if it is smaller than this
_COMPRESS_CHUNK = 16 << 20  # bytes per compressor call (see _compress_stream)
_ABANDON_GRACE = 5.0  # seconds aclose() waits for the I/O thread after giving up
PROBE_ID_FILE = ".probe-id"  # in the output dir: the random id used when none is configured


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


# --------------------------------------------------------------------------- file helpers


FILE_MODE = 0o640  # segments and the lock: the service's group may read, nobody else
DIR_MODE = 0o750  # directories the sink creates


def _create(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new file (O_EXCL), mode FILE_MODE whatever the umask (0 would give 0666)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def _create_file(path: Path) -> BinaryIO:
    """:func:`_create` as a binary file object (what ``open(path, "xb")`` was)."""
    return os.fdopen(_create(path), "wb")


def _make_dirs(directory: Path) -> None:
    """``mkdir -p`` whose new directories are DIR_MODE whatever the umask; existing ones
    (the operator's) are left as they are."""
    missing = []
    for path in (directory, *directory.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: theirs
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)


def _fsync_dir(directory: Path) -> None:
    """Make a directory's entries (new links, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(exc: BaseException) -> str:
    """``ENOSPC: No space left on device`` for logs and ``SinkStats.last_error``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _name_taken(directory: Path, name: SegmentName) -> bool:
    """True if the published segment ``name``, plain or compressed, exists."""
    return any((directory / (name.plain + s)).exists() for s in ("", *CODEC_SUFFIXES))


def _publish(part: Path) -> Path:
    """Link a closed, fsynced ``.part`` to its final name without replacing anything.

    ``os.link`` fails with EEXIST where ``rename`` would overwrite, so a name clash (a
    restart in the same second with a reused pid, e.g. pid 1 in a container) moves on
    to the next sequence number instead of destroying a closed segment.
    """
    name = SegmentName.parse(part.name)
    if name is None or name.state != PART_SUFFIX:
        raise ValueError(f"not an open segment: {part}")
    for _ in range(10_000):
        final = part.with_name(str(name.but(state="")))
        if not _name_taken(part.parent, name):
            try:
                os.link(part, final)
                break
            except FileExistsError:
                pass
        name = name.but(seq=name.seq + 1)
    else:
        raise FileExistsError(errno.EEXIST, "no free segment name", str(part))
    os.unlink(part)
    _fsync_dir(part.parent)
    return final


def _truncate_to_last_newline(path: Path) -> int:
    """Cut a crashed segment after its last ``\\n``; return the size kept (reads backwards)."""
    with open(path, "r+b") as fh:
        end = size = os.fstat(fh.fileno()).st_size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            found = fh.read(end - start).rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
            end = start
        if keep != size:
            fh.truncate(keep)
        os.fsync(fh.fileno())
    return keep


def _require_codec(method: Compression) -> None:
    """Fail at startup, not at the first rotation, when the codec is missing."""
    if method != "zstd":
        return
    try:
        importlib.import_module("zstandard")
    except ImportError:
        raise ConfigError(
            "[output] compress = 'zstd' needs the 'zstandard' package "
            "(pip install 'kzprobe[zstd]'), or use compress = 'gzip'"
        ) from None


def _compress_stream(method: codecs.Method, src: BinaryIO, dst: BinaryIO) -> None:
    """Compress ``src`` into ``dst`` in a few large calls straight from the page cache.

    The codecs release the GIL while they work but must take it back after every call;
    with the event loop busy each retake can wait a whole switch interval (5 ms), so
    1 MiB calls ran the compressor several times slower than 16 MiB calls.
    """
    encoder = codecs.Encoder(method)
    size = os.fstat(src.fileno()).st_size
    if size:
        with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mapped, \
                memoryview(mapped) as view:
            for start in range(0, size, _COMPRESS_CHUNK):
                with view[start:start + _COMPRESS_CHUNK] as part:
                    dst.write(encoder.chunk(part))
    dst.write(encoder.finish())


def compress_segment(path: Path, method: codecs.Method) -> Path:
    """Compress a closed segment to ``path.gz``/``.zst``, then remove the plain file.

    The compressed bytes go to a ``.tmp`` that is fsynced before it gets its final name,
    so a crash never leaves a half-compressed file under a name readers trust.
    """
    final = path.with_name(path.name + COMPRESSED_SUFFIXES[method])
    tmp = final.with_name(final.name + TMP_SUFFIX)
    try:
        with open(path, "rb") as src, _create_file(tmp) as dst:
            _compress_stream(method, src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    os.unlink(path)
    _fsync_dir(path.parent)
    return final


@dataclass(frozen=True, slots=True)
class _Recovery:
    """What startup recovery found: published leftovers and plain segments to compress."""

    published: tuple[Path, ...]
    uncompressed: tuple[Path, ...]


def _ours(directory: Path, prefix: str) -> dict[Path, SegmentName]:
    """Segment files of this prefix only: prefix ``kz`` must not claim ``kz-b-...`` files."""
    found = {}
    for path in directory.iterdir():
        name = SegmentName.parse(path.name, prefix)
        if name is not None:
            found[path] = name
    return found


def _recover_part(part: Path) -> Path | None:
    """Trim a crashed ``.part`` to whole records and publish it; drop it if nothing is left."""
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    if final.exists() and os.path.samefile(part, final):  # crashed between link and unlink
        os.unlink(part)
        _fsync_dir(part.parent)
        return final
    method = codecs.method_of(part.name)
    kept = _truncate_to_last_newline(part) if method is None else _repair_stream(part, method)
    if kept == 0:
        os.unlink(part)
        return None
    return _publish(part)


def _repair_stream(part: Path, method: codecs.Method) -> int:
    """Make a crashed compressed ``.part`` one complete stream of its whole records.

    Its batches ended at flush points, so everything written decodes; what is missing
    is the trailer, and perhaps part of a batch. The whole records are compressed anew
    to a ``.tmp`` that then replaces the part. Returns the uncompressed bytes kept.
    """
    tmp = part.with_name(part.name + TMP_SUFFIX)
    try:
        with open(part, "rb") as raw, _create_file(tmp) as dst:
            kept = _recompress_whole_lines(codecs.open_partial(method, raw), dst,
                                           codecs.Encoder(method))
            dst.flush()
            os.fsync(dst.fileno())
        if kept:
            os.replace(tmp, part)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return kept


def _recompress_whole_lines(reader: codecs.Reader, dst: BinaryIO, encoder: codecs.Encoder) -> int:
    """Copy the decodable whole lines of ``reader`` into ``dst`` through ``encoder``.

    Corrupt data ends the copy like the end of the file does: what came before it is kept.
    """
    kept, carry = 0, b""
    with contextlib.suppress(*codecs.decode_errors()):
        while len(carry) <= MAX_LINE_BYTES and (chunk := reader.read(1 << 20)):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                dst.write(encoder.chunk(memoryview(data)[:cut]))
                kept += cut
            carry = data[cut:]
    if kept:
        dst.write(encoder.finish())
    return kept


def _recover_or_defer(part: Path) -> Path | None:
    """``_recover_part``, except that a full disk leaves the part for a later start.

    Repairing a compressed part writes a copy of it; with no room for that the sink must
    still start (and wait for space like any write), not fail.
    """
    try:
        return _recover_part(part)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("sink_recovery_deferred", path=str(part), error=_describe(exc))
        return None


def _plain_leftovers(directory: Path, prefix: str) -> list[Path]:
    """Plain segments still to compress; those with a complete compressed twin are removed."""
    todo = []
    ours = _ours(directory, prefix)
    for plain in sorted(p for p, name in ours.items() if not (name.codec or name.state)):
        twins = [plain.with_name(plain.name + s) for s in COMPRESSED_SUFFIXES.values()]
        if any(t.exists() for t in twins):
            os.unlink(plain)  # twins are linked only after fsync: the twin is complete
        else:
            todo.append(plain)
    return todo


def recover_dir(directory: Path, prefix: str) -> _Recovery:
    """Clean up after a crash: remove ``*.tmp``, publish ``*.part``, find uncompressed segments."""
    ours = _ours(directory, prefix)
    for tmp in sorted(p for p, name in ours.items() if name.scratch):
        os.unlink(tmp)
    parts = sorted(p for p, name in ours.items() if name.state == PART_SUFFIX)
    published = [p for part in parts if (p := _recover_or_defer(part)) is not None]
    todo = _plain_leftovers(directory, prefix)
    _fsync_dir(directory)
    return _Recovery(published=tuple(published), uncompressed=tuple(todo))


def _lock_dir(directory: Path, prefix: str) -> int:
    """Create the directory and take an exclusive lock so two writers never share a prefix.

    The lock file is opened read-only: it must not count as a writer, or a read-only
    remount of the results filesystem would fail with EBUSY.
    """
    try:
        _make_dirs(directory)
        fd = os.open(directory / f".{prefix}.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                     FILE_MODE)
    except OSError as exc:
        raise KzprobeError(f"{directory}: cannot use output directory: {_describe(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise KzprobeError(
            f"{directory}: another kzprobe process is writing segments with prefix {prefix!r}"
        ) from None
    return fd


# --------------------------------------------------------------------------- blocking writer


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


class _SegmentWriter:
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
                fd = _create(part, os.O_WRONLY | os.O_APPEND)
            except FileExistsError:
                continue
            try:
                _fsync_dir(self._out.dir)
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
            final = _publish(self._closed[0])
            self._closed.pop(0)
            self._seq = max(self._seq, self._seq_of(final))
            self._stats.segments_rotated += 1
            if codecs.method_of(final.name) is not None:
                self._stats.segments_compressed += 1

    @staticmethod
    def _seq_of(path: Path) -> int:
        name = SegmentName.parse(path.name)
        return name.seq if name is not None else 0


# --------------------------------------------------------------------------- the sink


class _GiveUp(Exception):
    """Raised inside the writer task when aclose() stops waiting for a blocked disk."""


def _settle(done: asyncio.Future[None], ok: bool) -> None:
    """Finish a request's future; if the writer gave up first, fail it (and mark it seen)."""
    if done.done():
        return
    if ok:
        done.set_result(None)
        return
    done.set_exception(RuntimeError("sink gave up before the request was done"))
    done.exception()  # retrieved: the requester may have stopped waiting


@dataclass(slots=True)
class _Request:
    """A rotate or close request, ordered after every record queued before it."""

    kind: Literal["rotate", "close"]
    done: asyncio.Future[None]


class _Buffer:
    """Records (and rotate/close requests) between ``write()`` and the writer task.

    A plain deque with counters: appending costs no await, no future and no wake-up per
    record, which an ``asyncio.Queue`` would. Bounded in records and bytes (requests do
    not count); a single record larger than ``max_bytes`` still fits into an empty buffer.
    """

    def __init__(self, *, max_records: int, max_bytes: int) -> None:
        self._items: deque[bytes | _Request] = deque()
        self._max_records = max(1, max_records)
        self._max_bytes = max_bytes
        self.records = 0
        self._bytes = 0
        self.requests = 0  # rotate/close requests waiting
        self._ready = asyncio.Event()  # set while there are items (wakes the writer)
        self._room = asyncio.Event()  # set while not full (wakes producers)
        self._room.set()

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def size(self) -> int:
        """Bytes of the records waiting."""
        return self._bytes

    def full(self) -> bool:
        return self.records >= self._max_records or (
            self.records > 0 and self._bytes >= self._max_bytes)

    async def wait_room(self) -> None:
        if self.full():
            self._room.clear()
        await self._room.wait()

    def release_waiters(self) -> None:
        """Wake every producer waiting for room (the sink no longer accepts records)."""
        self._room.set()

    async def wait_ready(self) -> None:
        if not self._items:
            self._ready.clear()
        await self._ready.wait()

    def push(self, item: bytes | _Request) -> None:
        self._items.append(item)
        if isinstance(item, bytes):
            self.records += 1
            self._bytes += len(item)
        else:
            self.requests += 1
        if not self._ready.is_set():
            self._ready.set()

    def pop(self) -> bytes | _Request:
        item = self._items.popleft()
        self._taken(item)
        return item

    def take_batch(self, first: bytes, max_bytes: int) -> tuple[list[bytes], _Request | None]:
        """``first`` and the records after it up to ``max_bytes``, or up to a request."""
        batch, size, items = [first], len(first), self._items
        while items and size < max_bytes:
            item = items.popleft()
            self._taken(item)
            if isinstance(item, _Request):
                return batch, item
            batch.append(item)
            size += len(item)
        return batch, None

    def take_all(self) -> list[bytes | _Request]:
        items = list(self._items)
        self._items.clear()
        self.records = self._bytes = self.requests = 0
        self._room.set()
        return items

    def _taken(self, item: bytes | _Request) -> None:
        if not isinstance(item, bytes):
            self.requests -= 1
        else:
            self.records -= 1
            self._bytes -= len(item)
            if not self._room.is_set() and not self.full():
                self._room.set()


def resolve_probe_id(directory: Path) -> str:
    """The probe id stored in ``directory``, made (at random) and stored on first use.

    Segment names used to carry the host name, which often is the address the records are
    scrubbed of. Two writers racing on one directory agree: the id is published with
    ``link``, which fails for the loser, who then reads the winner's.
    """
    path = directory / PROBE_ID_FILE
    try:
        try:
            return _read_probe_id(path)
        except FileNotFoundError:
            _store_probe_id(directory, path)
            return _read_probe_id(path)
    except OSError as exc:
        raise KzprobeError(f"{path}: cannot read or store the probe id: {_describe(exc)}"
                           ) from None


def _read_probe_id(path: Path) -> str:
    # O_NONBLOCK: a FIFO put here must not hang the start; only a regular file is read
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KzprobeError(f"{path}: not a regular file; remove it or set [probe] id")
        data = os.read(fd, MAX_PROBE_ID + 2)  # an id, a newline, and one byte to see more
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if not valid_probe_id(text):
        raise KzprobeError(f"{path}: not a probe id (1-{MAX_PROBE_ID} of A-Z a-z 0-9 _ -); "
                           "remove it (a new one is made) or set [probe] id")
    return text


def _store_probe_id(directory: Path, path: Path) -> None:
    tmp = directory / f"{PROBE_ID_FILE}.{os.getpid()}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o640)
    try:
        os.fchmod(fd, 0o640)  # whatever the umask
        os.write(fd, secrets.token_hex(6).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another writer stored one first: theirs is the id
        pass
    finally:
        os.unlink(tmp)
    _fsync_dir(directory)


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
        self._buffer = _Buffer(max_records=queue_size, max_bytes=queue_bytes)
        self._writer = _SegmentWriter(output, probe_id or "", self.stats)
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
        _require_codec(self._out.compress)
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="kzprobe-sink")
        try:
            self._lock_fd = await self._io(_lock_dir, self._out.dir, self._out.prefix)
            if self.probe_id is None:
                self.probe_id = await self._io(resolve_probe_id, self._out.dir)
            self._writer.probe_id = self.probe_id
            found = await self._io(recover_dir, self._out.dir, self._out.prefix)
        except OSError as exc:
            await self._release()
            raise KzprobeError(f"{self._out.dir}: recovery failed: {_describe(exc)}") from None
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

    async def _handle(self, item: bytes | _Request) -> bool:
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
                _settle(req.done, ok=False)
            raise
        for req in requests:
            _settle(req.done, ok=True)
        return request.kind != "close"

    async def _write_stragglers(self) -> list[_Request]:
        """At close, write what producers that were waiting for space still queue.

        Each get wakes a waiting producer, which puts its record one loop turn later;
        so repeat until a round, after yielding, finds the queue empty.
        """
        requests: list[_Request] = []
        while self._buffer:
            batch: list[bytes] = []
            for item in self._buffer.take_all():
                if isinstance(item, _Request):
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
        log.error("sink_writer_crashed", error=_describe(error))
        self._mark_blocked(error if isinstance(error, Exception) else RuntimeError(str(error)))

    async def _next_item(self) -> bytes | _Request | None:
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

    def _gather(self, first: bytes | _Request) -> tuple[list[bytes], _Request | None]:
        """Batch what is already buffered, stopping at a request so ordering holds."""
        if isinstance(first, _Request):
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
        self.stats.last_error = _describe(error)
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

    async def _compress_leftovers(self, found: _Recovery) -> list[Path]:
        """Compress what a crash left plain; return the recovered segments' current paths."""
        recovered = list(found.published)
        if self._out.compress == "none":
            return recovered
        for path in found.uncompressed:  # includes the segments just published
            try:
                done = await self._io(compress_segment, path, self._out.compress)
            except OSError as exc:  # e.g. disk full: stays plain, compressed on a later start
                log.warning("sink_compress_failed", path=str(path), error=_describe(exc))
                continue
            self.stats.segments_compressed += 1
            recovered = [done if p == path else p for p in recovered]
        return recovered

    # -- plumbing

    async def _request(self, kind: Literal["rotate", "close"]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.push(_Request(kind=kind, done=done))
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
            if isinstance(item, _Request):
                _settle(item.done, ok=False)
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
