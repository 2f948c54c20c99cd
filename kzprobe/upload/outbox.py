"""The upload outbox: a durable cursor over the closed segments, nothing copied.

Segments are the outbox. ``upload-outbox.json`` in the output directory keeps, per
collector URL, the position (segment name, line) up to which every record was accepted,
rejected or skipped; everything after it in the closed segments is still to send. Names
start with the UTC start time, so name order is write order, and a segment's plain,
compressed and open forms share one name (``*.ndjson``), which is what the cursor holds.
The file is replaced atomically and fsync'd (:func:`kzprobe.alerts.journal.write_json`),
so a crash leaves the old cursor or the new one: at least once, never lost. A collector
the file does not know starts at the time it was first configured (records written before
upload was enabled are not sent). Only closed segments are read: the one the writer
appends to is left to it, and is read once it is published.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from kzprobe.alerts.journal import read_json, write_json
from kzprobe.storage.naming import STAMP_FORMAT, SegmentFile, SegmentName
from kzprobe.storage.segments import current, iter_lines, list_segments

log = structlog.get_logger("kzprobe.upload")

OUTBOX_FILE = "upload-outbox.json"
STATE_VERSION = 1
MAX_COLLECTORS = 16  # cursors kept in the file (the most recently used)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A record's place: the segment's plain name and its 1-based line (0: before line 1)."""

    segment: str
    line: int


@dataclass(frozen=True, slots=True)
class Item:
    """One line read from a closed segment, with its position."""

    position: Position
    raw: bytes


def start_position(prefix: str, now: float | None = None) -> Position:
    """Where a new collector's cursor starts: before any segment opened from now on."""
    stamp = time.strftime(STAMP_FORMAT, time.gmtime(time.time() if now is None else now))
    return Position(f"{prefix}-{stamp}", 0)


def load_cursor(directory: Path, collector: str, prefix: str) -> Position:
    """The saved cursor of ``collector``, or a fresh one starting now."""
    state = read_json(directory / OUTBOX_FILE) or {}
    saved = (state.get("collectors") or {}).get(collector)
    if isinstance(saved, dict) and isinstance(saved.get("segment"), str) \
            and isinstance(saved.get("line"), int) and saved["line"] >= 0:
        return Position(saved["segment"], saved["line"])
    return start_position(prefix)


def save_cursor(directory: Path, collector: str, position: Position) -> None:
    """Persist ``collector``'s cursor, keeping the others' (blocking: run it in a thread)."""
    path = directory / OUTBOX_FILE
    state = read_json(path) or {}
    known = state.get("collectors")
    cursors: dict[str, Any] = dict(known) if isinstance(known, dict) else {}
    cursors.pop(collector, None)
    cursors[collector] = {"segment": position.segment, "line": position.line,
                          "saved_at": round(time.time(), 3)}
    while len(cursors) > MAX_COLLECTORS:
        cursors.pop(next(iter(cursors)))
    write_json(path, {"version": STATE_VERSION, "collectors": cursors})


def _plain(path: Path) -> str:
    file = SegmentFile.parse(path.name)
    return file.plain if file is not None else path.name


class SegmentReader:
    """Lines of the closed segments after a position, in order (blocking: one thread at a
    time). A segment is listed again only when the one being read is exhausted."""

    def __init__(self, directory: Path, prefix: str, after: Position) -> None:
        self.directory = directory
        self.prefix = prefix
        self.after = after  # the last position handed out
        self._lines: Iterator[tuple[int, bytes]] | None = None
        self._counts: dict[str, int] = {}  # lines of closed segments at or after the cursor

    def batch(self, limit: int) -> list[Item]:
        """Up to ``limit`` items after the last one handed out; fewer when none are closed."""
        items: list[Item] = []
        while len(items) < limit:
            if self._lines is None and not self._open_next():
                break
            assert self._lines is not None
            item = next(self._lines, None)
            if item is None:
                self._lines = None  # exhausted: the next closed segment, if any
                self.after = Position(self.after.segment, 1 << 62)
                continue
            lineno, raw = item
            if lineno > self.after.line:
                self.after = Position(self.after.segment, lineno)
                items.append(Item(self.after, raw))
        return items

    def pending(self, cursor: Position) -> int:
        """Records in closed segments after ``cursor`` (as far as the segments were counted)."""
        total = 0
        for name, count in list(self._counts.items()):
            if name < cursor.segment:
                del self._counts[name]
            elif name == cursor.segment:
                total += max(0, count - cursor.line)
            else:
                total += count
        return total

    def _closed(self) -> list[Path]:
        try:
            found = list_segments([self.directory], include_open=False)
        except OSError as exc:
            log.warning("upload_list_failed", error=str(exc))
            return []
        return [p for p in found if SegmentName.parse(p.name, self.prefix) is not None]

    def _open_next(self) -> bool:
        """Start the first closed segment with lines after ``after``; False when none."""
        for path in self._closed():
            name = _plain(path)
            if name not in self._counts and name >= self.after.segment:
                self._counts[name] = sum(1 for _ in iter_lines(current(path)))
            if name < self.after.segment:
                continue
            if name == self.after.segment and self.after.line >= self._counts.get(name, 0):
                continue
            if name != self.after.segment:
                self.after = Position(name, 0)
            self._lines = iter_lines(current(path), on_error=_report)
            return True
        return False


def _report(path: Path, line: int, reason: str) -> None:
    log.warning("upload_segment_line_skipped", file=path.name, line=line, reason=reason)


class Window:
    """Positions handed out and not yet finished, in order; the cursor is the end of the
    finished prefix (a record finished out of order waits for those before it)."""

    def __init__(self, cursor: Position) -> None:
        self.cursor = cursor
        self._order: deque[Position] = deque()
        self._finished: set[Position] = set()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, position: Position) -> None:
        self._order.append(position)

    def finish(self, position: Position) -> bool:
        """Mark ``position`` finished; True when the cursor moved."""
        self._finished.add(position)
        moved = False
        while self._order and self._order[0] in self._finished:
            self._finished.discard(head := self._order.popleft())
            self.cursor = head
            moved = True
        return moved
