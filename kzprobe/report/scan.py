"""Segments into one DuckDB table: a single parallel scan, Python only where files are odd.

DuckDB reads closed segments (``.ndjson``, ``.gz``, ``.zst``) itself, in parallel: that
is the fast path. Python (:func:`kzprobe.storage.segments.iter_lines`) handles what DuckDB cannot
judge: a live ``.part`` (its torn tail is a write in progress, not an error), a file
DuckDB refuses (a truncated gzip, a file compressed away since it was listed), and the
line numbers of corrupt lines in a file where DuckDB found some (DuckDB turns a corrupt
line into an empty row but does not say which line it was).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from kzprobe.report import sql
from kzprobe.report.events import is_events_file
from kzprobe.report.model import TIME_FORMAT, ReadError, ReadStats, ReportError, Window
from kzprobe.storage.naming import SegmentName
from kzprobe.storage.segments import MAX_LINE_BYTES, current, is_open, iter_lines, list_segments

MAX_ERRORS_KEPT = 1000  # listed in the report; all of them are counted
# A record's measurement may start before its segment opened (by at most one measurement's
# deadline: minutes), and clocks get stepped. An hour of slack keeps file pruning safe.
_START_SLACK = timedelta(hours=1)


class ErrorLog:
    """Counts every unusable line, keeps the first ``MAX_ERRORS_KEPT`` for the report."""

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[ReadError] = []

    def __call__(self, path: Path, line: int, reason: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_ERRORS_KEPT:
            self.kept.append(ReadError(path, line, reason))

    def sorted(self) -> tuple[ReadError, ...]:
        """The kept problems by file and line."""
        return tuple(sorted(self.kept, key=lambda e: (str(e.file), e.line)))


def connect(tmp: Path, *, memory_limit: str,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to ``tmp`` and never reaches for the network."""
    config: dict[str, Any] = {
        "memory_limit": memory_limit,
        "temp_directory": str(tmp / "spill"),
        "preserve_insertion_order": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET enable_progress_bar = false")
    return con


def parse_time(text: str) -> datetime | None:
    """OONI's ``YYYY-MM-DD HH:MM:SS`` (naive UTC), or None."""
    try:
        return datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        return None


def problem(line: bytes) -> str | None:
    """Why a line is not a usable record (the rule the SQL applies too), or None."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return f"not a JSON object: {type(value).__name__}"
    url = value.get("input")
    if not isinstance(url, str) or not url:
        return "no 'input' string"
    when = value.get("measurement_start_time")
    if not isinstance(when, str) or parse_time(when) is None:
        return "no 'measurement_start_time' as YYYY-MM-DD HH:MM:SS"
    return None


def _usable_lines(path: Path, errors: ErrorLog) -> Iterator[bytes]:
    """The lines of one file that pass :func:`problem`; the others go to ``errors``."""
    for lineno, line in iter_lines(path, on_error=errors, max_line_bytes=MAX_LINE_BYTES):
        if not line.strip():
            continue  # DuckDB skips blank lines too
        reason = problem(line)
        if reason is None:
            yield line
        else:
            errors(path, lineno, reason)


def _copy_usable(path: Path, copy: Path, errors: ErrorLog) -> Path:
    """Write the usable lines of ``path`` to ``copy`` (plain NDJSON) for DuckDB to read."""
    with open(copy, "wb") as out:
        for line in _usable_lines(current(path), errors):
            out.write(line)
            out.write(b"\n")
    return copy


def rescan(path: Path, errors: ErrorLog) -> None:
    """Report the corrupt lines of a file DuckDB flagged, with their line numbers."""
    for _ in _usable_lines(current(path), errors):
        pass


def _segment_start(path: Path) -> datetime | None:
    name = SegmentName.parse(path.name)
    return None if name is None else name.start


def _writer(path: Path) -> tuple[str, str, int] | None:
    """The writer a segment came from: prefix, probe id (or, in old names, host) and pid."""
    name = SegmentName.parse(path.name)
    return None if name is None else name.writer


def prune(files: Sequence[Path], window: Window) -> list[Path]:
    """Drop segments that cannot hold records in the window, judged by their names.

    A segment starting more than an hour after ``until`` is skipped, and so is one whose
    writer opened its next segment more than an hour before ``since`` (records are
    written after they start, and a writer fills one segment at a time).
    """
    starts = {path: start for path in files if (start := _segment_start(path)) is not None}
    by_writer: dict[tuple[Path, tuple[str, str, int] | None], list[Path]] = {}
    for path in starts:
        by_writer.setdefault((path.parent, _writer(path)), []).append(path)
    next_start: dict[Path, datetime] = {}
    for group in by_writer.values():
        group.sort(key=lambda p: (starts[p], p.name))
        next_start.update(zip(group, (starts[p] for p in group[1:]), strict=False))
    return [p for p in files if _may_overlap(starts.get(p), next_start.get(p), window)]


def _may_overlap(start: datetime | None, end: datetime | None, window: Window) -> bool:
    if start is not None and window.until is not None and start - _START_SLACK >= window.until:
        return False
    return not (end is not None and window.since is not None
                and end + _START_SLACK < window.since)


def list_files(paths: Iterable[Path]) -> list[Path]:
    """The segments named by the command line; a missing path or a non-segment is an error.

    Event logs (``events-YYYYMMDD.ndjson``) share the segments' suffix and directory but
    are not records: :mod:`kzprobe.report.events` reads them.
    """
    try:
        files = list_segments([Path(p) for p in paths], include_open=True)
    except (OSError, ValueError) as exc:
        raise ReportError(str(exc)) from None
    files = [f for f in files if not is_events_file(f.name)]
    if not files:
        shown = ", ".join(str(p) for p in paths)
        raise ReportError(f"{shown}: no segments (.ndjson, .ndjson.gz, .ndjson.zst, .part)")
    return files


def _insert(con: duckdb.DuckDBPyConnection, files: Sequence[Path], params: list[Any],
            errors: ErrorLog, tmp: Path) -> None:
    """One scan of ``files``; if DuckDB refuses one, halve until it is found and salvage it."""
    try:
        con.execute(sql.INSERT_SCAN, [[str(f) for f in files], *params])
    except (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException):
        if len(files) > 1:
            half = len(files) // 2
            _insert(con, files[:half], params, errors, tmp)
            _insert(con, files[half:], params, errors, tmp)
            return
        handle, name = tempfile.mkstemp(prefix="salvaged-", suffix=".ndjson", dir=tmp)
        os.close(handle)
        copy = _copy_usable(files[0], Path(name), errors)
        con.execute(sql.INSERT_SCAN, [[str(copy)], *params])


def load(con: duckdb.DuckDBPyConnection, paths: Iterable[Path], window: Window,
         tmp: Path, errors: ErrorLog | None = None) -> ReadStats:
    """Fill table ``m`` with the usable records of the segments under ``paths``."""
    errors = errors if errors is not None else ErrorLog()
    listed = list_files(paths)
    files = prune(listed, window)
    copies: list[Path] = []
    closed: list[Path] = []
    for path in files:
        if is_open(path.name):
            copies.append(_copy_usable(path, tmp / f"open-{len(copies)}.ndjson", errors))
        else:
            closed.append(path)
    con.execute(sql.CREATE_TABLE)
    params = [window.since, window.until]
    if closed or copies:
        _insert(con, closed + copies, params, errors, tmp)
    _rescan_flagged(con, set(map(str, copies)), errors)
    records = con.execute("SELECT count(*) FROM m").fetchone()
    return ReadStats(files=len(listed), open_segments=len(files) - len(closed),
                     records=int(records[0]) if records else 0, corrupt_lines=errors.count,
                     errors=errors.sorted())


def _rescan_flagged(con: duckdb.DuckDBPyConnection, copies: set[str], errors: ErrorLog) -> None:
    """Find the line numbers of the rows DuckDB could not use, then drop those rows."""
    flagged = con.execute(sql.FLAGGED_FILES).fetchall()
    for (name,) in flagged:
        if name not in copies:  # copies hold only checked lines
            rescan(Path(name), errors)
    if flagged:
        con.execute("DELETE FROM m WHERE bad_file IS NOT NULL")
