"""The durable files of alerting, all in ``[output] dir``: the event log
``events-YYYYMMDD.ndjson`` (UTC day; appended with one write per batch and fsync'd, a torn
last line cut at start) and small JSON files replaced atomically (temp, fsync, rename,
fsync dir). Blocking calls: the caller runs them off the event loop."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog

from kzprobe.storage.files import FILE_MODE, create, fsync_dir, make_dirs, truncate_to_last_newline
from kzprobe.storage.naming import event_log_name, is_event_log

log = structlog.get_logger("kzprobe.alerts")

EVENTS_GLOB = "events-*.ndjson"
MAX_LINE_BYTES = 1 << 20  # an event is a few KiB; a longer line is not ours
MAX_STATE_BYTES = 256 << 20  # the state file: ~100k targets at ~1 KiB


def events_name(unix: float) -> str:
    return event_log_name(unix)


def event_files(directory: Path) -> list[Path]:
    """The event logs in ``directory``, oldest day first."""
    try:
        names = sorted(p.name for p in directory.iterdir() if is_event_log(p.name))
    except FileNotFoundError:
        return []
    return [directory / name for name in names]


def recover(directory: Path) -> int:
    """Cut a partial last line (kill -9 mid-write) off the newest event log; bytes cut."""
    files = event_files(directory)
    if not files:
        return 0
    size = files[-1].stat().st_size
    cut = size - truncate_to_last_newline(files[-1])
    if cut:
        log.warning("alerts_event_log_repaired", file=files[-1].name, bytes_cut=cut)
    return cut


def append(directory: Path, events: list[dict[str, Any]], unix: float) -> Path:
    """Append ``events`` to the day's log in one write, fsync'd (and the directory when new)."""
    make_dirs(directory)
    path = directory / events_name(unix)
    data = b"".join(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE) for event in events)
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(directory)
    return path


def _lines(path: Path) -> Iterator[bytes]:
    """Complete lines of a file, each at most MAX_LINE_BYTES (longer ones skipped)."""
    with open(path, "rb") as fh:
        while True:
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if line.endswith(b"\n"):
                yield line
            elif len(line) > MAX_LINE_BYTES:
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = fh.readline(MAX_LINE_BYTES)


def _events(path: Path) -> Iterator[dict[str, Any]]:
    for line in _lines(path):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("alerts_event_unreadable", file=path.name)
            continue
        if isinstance(event, dict) and isinstance(event.get("seq"), int):
            yield event


def _first_seq(path: Path) -> int | None:
    return next((event["seq"] for event in _events(path)), None)


def read_after(directory: Path, seq: int, keep: int) -> tuple[list[dict[str, Any]], int]:
    """The events with a ``seq`` above ``seq``, oldest first, the newest ``keep`` of them,
    and how many older ones did not fit. Reads only the days that can hold them."""
    files = event_files(directory)
    start = len(files)
    while start > 0:
        start -= 1
        first = _first_seq(files[start])
        if first is not None and first <= seq:
            break
    found: deque[dict[str, Any]] = deque(maxlen=max(0, keep))
    total = 0
    for path in files[start:]:
        for event in _events(path):
            if event["seq"] > seq:
                found.append(event)
                total += 1
    ordered = sorted(found, key=lambda e: int(e["seq"]))
    return ordered, total - len(ordered)


def last_event(directory: Path, scope: str, days: int = 31) -> dict[str, Any] | None:
    """The newest event of ``scope`` ("network") in the newest ``days`` event logs, or None."""
    for path in list(reversed(event_files(directory)))[:days]:
        found = None
        for event in _events(path):
            if event.get("scope") == scope:
                found = event
        if found is not None:
            return found
    return None


def last_seq(directory: Path) -> int:
    """The highest sequence number in the newest event log (0 when there is none)."""
    for path in reversed(event_files(directory)):
        highest = max((event["seq"] for event in _events(path)), default=None)
        if highest is not None:
            return int(highest)
    return 0


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``value`` atomically: a crash leaves the old or the new file."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crash
    fd = create(tmp)
    try:
        data = memoryview(orjson.dumps(value))
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path, limit: int = MAX_STATE_BYTES) -> dict[str, Any] | None:
    """A JSON object written by :func:`write_json`, or None (absent, too big, unreadable)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        log.warning("alerts_state_too_big", file=path.name, limit=limit)
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("alerts_state_unreadable", file=path.name)
        return None
    return value if isinstance(value, dict) else None
