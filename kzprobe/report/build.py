"""From segment paths to a :class:`Report`: scan once, then query the scanned table.

The event logs beside the segments (:mod:`kzprobe.report.events`) are read in the same
pass and become the ``events`` and ``outages`` tables.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from kzprobe.report import events, grid, scan, sql, timeline
from kzprobe.report.events import EventLog
from kzprobe.report.model import TIME_FORMAT, ReadStats, Report, Table, Window

HEATMAP_TARGETS = 150  # rows of the HTML heatmap: the most often blocked targets
MEMORY_LIMIT = "1GB"  # DuckDB's own budget; beyond it the scanned table spills to disk

TABLE_QUERIES: tuple[tuple[str, str], ...] = (
    ("targets", sql.TARGETS),
    ("changes", sql.CHANGES),
    ("categories", sql.CATEGORIES),
    ("networks", sql.NETWORKS),
    ("days", sql.DAYS),
    ("mechanisms", sql.MECHANISMS),
    ("periods", sql.PERIODS),
)


Scanned = tuple[duckdb.DuckDBPyConnection, ReadStats, EventLog]


@contextmanager
def scanned(paths: Iterable[Path], window: Window, *, memory_limit: str = MEMORY_LIMIT,
            threads: int | None = None) -> Iterator[Scanned]:
    """A DuckDB connection whose table ``m`` holds the usable records, the read stats
    (segments and event logs), and the event log.

    Everything (DuckDB's spill files, copies of open segments) lives in a temporary
    directory removed on exit.
    """
    paths = list(paths)
    with tempfile.TemporaryDirectory(prefix="kzprobe-report-") as name:
        tmp = Path(name)
        con = scan.connect(tmp, memory_limit=memory_limit, threads=threads)
        try:
            errors = scan.ErrorLog()
            stats = scan.load(con, paths, window, tmp, errors)
            log = events.read_log(paths, window, errors)
            stats = dataclasses.replace(
                stats, corrupt_lines=errors.count, errors=errors.sorted(),
                event_files=log.files, events_not_read=log.not_read,
                event_files_not_read=log.files_not_read)
            con.execute(sql.CREATE_STARTS)
            con.execute(sql.CREATE_RUNS)
            con.execute(sql.CREATE_TARGETS)
            yield con, stats, log
        finally:
            con.close()


def query(con: duckdb.DuckDBPyConnection, name: str, text: str,
          params: list[Any] | None = None) -> Table:
    """Run one query and keep its result as a named table."""
    cursor = con.execute(text, params or [])
    columns = tuple(d[0] for d in cursor.description or ())
    return Table(name, columns, tuple(tuple(row) for row in cursor.fetchall()))


def bucket_for(first_seen: str | None, last_seen: str | None) -> str:
    """The heatmap's time step: hours for two days of data, days up to half a year, weeks."""
    if first_seen is None or last_seen is None:
        return "hour"
    span = datetime.strptime(last_seen, TIME_FORMAT) - datetime.strptime(first_seen, TIME_FORMAT)
    if span <= timedelta(days=2):
        return "hour"
    return "day" if span <= timedelta(days=183) else "week"


def summarise(con: duckdb.DuckDBPyConnection, stats: ReadStats, window: Window, *,
              log: EventLog | None = None, heatmap: bool = False) -> Report:
    """Every table of the report from the scanned records and events (and the heatmap's,
    if asked)."""
    log = log or EventLog()
    summary = query(con, "summary", sql.SUMMARY).records()[0]
    tables = [query(con, name, text) for name, text in TABLE_QUERIES]
    tables += [timeline.events_table(log, window), timeline.outages_table(log, window)]
    summary.update(files=stats.files, open_segments=stats.open_segments,
                   corrupt_lines=stats.corrupt_lines, event_files=stats.event_files,
                   events=len(tables[-2].rows), outage_periods=len(tables[-1].rows))
    if heatmap:
        bucket = bucket_for(summary["first_seen"], summary["last_seen"])
        summary["heatmap_bucket"] = bucket
        tables.append(query(con, "heatmap", sql.HEATMAP, [bucket, HEATMAP_TARGETS]))
        tables.append(grid.grid_table(con, summary))  # the HTML status grid (report/grid.py)
    return Report(window=window, stats=stats, summary=summary, tables=tuple(tables))


def build_report(paths: Iterable[Path], window: Window | None = None, *,
                 memory_limit: str = MEMORY_LIMIT, heatmap: bool = False) -> Report:
    """The report over every segment under ``paths`` within ``window`` (default: all)."""
    window = window or Window()
    with scanned(paths, window, memory_limit=memory_limit) as (con, stats, log):
        return summarise(con, stats, window, log=log, heatmap=heatmap)
