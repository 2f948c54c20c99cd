"""From segment paths (or a Parquet store) to a :class:`Report`: load table ``m`` once into
an engine (DuckDB by default, Spark for a fleet), then run the same queries over it.

The event logs beside the segments (:mod:`kzprobe.report.events`) are read in the same
pass and become the ``events`` and ``outages`` tables.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb

from kzprobe.report import events, grid, scan, sql, store, timeline
from kzprobe.report.events import EventLog
from kzprobe.report.model import ReadStats, Report, Table, Window

MEMORY_LIMIT = "1GB"  # DuckDB's own budget; beyond it the scanned table spills to disk
ENGINES = ("duckdb", "spark")

# Tables the others are computed from, in order; each engine keeps them (DuckDB as
# temporary tables, Spark as cached views).
DERIVED: tuple[tuple[str, str], ...] = (
    ("sources", sql.SOURCES),
    ("starts", sql.STARTS),
    ("runs", sql.RUNS),
    ("targets", sql.TARGET_STATES),
)

TABLE_QUERIES: tuple[tuple[str, str], ...] = (
    ("targets", sql.TARGETS),
    ("changes", sql.CHANGES),
    ("categories", sql.CATEGORIES),
    ("networks", sql.NETWORKS),
    ("network_compare", sql.NETWORK_COMPARE),
    ("days", sql.DAYS),
    ("mechanisms", sql.MECHANISMS),
    ("periods", sql.PERIODS),
)


class Engine(Protocol):
    """What the report needs of an engine once table ``m`` is loaded: the same SQL text
    (DuckDB's dialect, :mod:`kzprobe.report.sql`) run to named tables."""

    def derive(self, name: str, text: str) -> None: ...

    def query(self, name: str, text: str, params: Sequence[Any] = ()) -> Table: ...


class DuckDBEngine:
    """The default engine: the connection that scanned the records."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def derive(self, name: str, text: str) -> None:
        """Keep a query's result as temporary table ``name``."""
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {text}")

    def query(self, name: str, text: str, params: Sequence[Any] = ()) -> Table:
        """Run one query and keep its result as a named table."""
        return query(self.con, name, text, list(params))


@dataclass(frozen=True, slots=True)
class Opened:
    """Table ``m`` loaded into an engine, with what the reading saw. ``con`` is DuckDB's
    connection holding ``m`` (for ``--export-parquet``), None when Spark read a store."""

    engine: Engine
    stats: ReadStats
    log: EventLog
    con: duckdb.DuckDBPyConnection | None


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
            yield (con, *_load(con, paths, window, tmp))
        finally:
            con.close()


def _load(con: duckdb.DuckDBPyConnection, paths: list[Path], window: Window,
          tmp: Path) -> tuple[ReadStats, EventLog]:
    """Table ``m`` from a Parquet store or from segments (and their event logs)."""
    found = store.find(paths)
    if found is not None:
        return store.load(con, found, window), store.read_events(con, found, window)
    errors = scan.ErrorLog()
    stats = scan.load(con, paths, window, tmp, errors)
    log = events.read_log(paths, window, errors)
    stats = dataclasses.replace(
        stats, corrupt_lines=errors.count, errors=errors.sorted(),
        event_files=log.files, events_not_read=log.not_read,
        event_files_not_read=log.files_not_read)
    return stats, log


def derive(engine: Engine) -> None:
    """The tables the report's tables are computed from."""
    for name, text in DERIVED:
        engine.derive(name, text)


@contextmanager
def opened(paths: Iterable[Path], window: Window, *, engine: str = "duckdb",
           master: str | None = None, memory_limit: str = MEMORY_LIMIT,
           threads: int | None = None) -> Iterator[Opened]:
    """Table ``m`` in the engine asked for, the derived tables computed.

    DuckDB scans segments (or reads a store); Spark reads a store itself, and takes
    segments from DuckDB's scan, which keeps the read errors and open segments.
    """
    paths = list(paths)
    if engine == "spark":
        with _spark(paths, window, master, memory_limit, threads) as ready:
            yield ready
        return
    with scanned(paths, window, memory_limit=memory_limit, threads=threads) as (con, st, log):
        duck = DuckDBEngine(con)
        derive(duck)
        yield Opened(duck, st, log, con)


@contextmanager
def _spark(paths: list[Path], window: Window, master: str | None, memory_limit: str,
           threads: int | None) -> Iterator[Opened]:
    from kzprobe.report import spark  # pyspark and a JVM only when asked for

    engine = spark.SparkEngine(spark.session(master))
    try:
        found = store.find(paths)
        if found is not None:
            with tempfile.TemporaryDirectory(prefix="kzprobe-report-") as name:
                con = scan.connect(Path(name), memory_limit=memory_limit, threads=threads)
                try:
                    log = store.read_events(con, found, window)
                finally:
                    con.close()
            records = engine.load_store(found, window)
            stats = ReadStats(files=len(store.files(found)), open_segments=0,
                              records=records, corrupt_lines=0)
            derive(engine)
            yield Opened(engine, stats, log, None)
            return
        with scanned(paths, window, memory_limit=memory_limit, threads=threads) as scan_:
            con, stats, log = scan_
            with tempfile.TemporaryDirectory(prefix="kzprobe-spark-") as name:
                engine.load_scanned(con, Path(name))
                derive(engine)
                yield Opened(engine, stats, log, con)
    finally:
        engine.close()


def query(con: duckdb.DuckDBPyConnection, name: str, text: str,
          params: list[Any] | None = None) -> Table:
    """Run one query and keep its result as a named table."""
    cursor = con.execute(text, params or [])
    columns = tuple(d[0] for d in cursor.description or ())
    return Table(name, columns, tuple(tuple(row) for row in cursor.fetchall()))


def grid_table(engine: Engine, summary: dict[str, Any]) -> Table:
    """The HTML status grid's cells (only bins with measurements), on any engine;
    ``summary`` gains ``grid_bin_s``, the bin width (:mod:`kzprobe.report.grid`)."""
    typical = engine.query("typical", grid.TYPICAL_COUNT).rows[0][0]
    step = grid.bin_seconds(summary.get("first_seen"), summary.get("last_seen"),
                            float(typical) if typical is not None else 1.0)
    summary["grid_bin_s"] = step
    return engine.query("grid", grid.GRID, [step, grid.MAX_ROWS])


def summarise(engine: Engine | duckdb.DuckDBPyConnection, stats: ReadStats, window: Window,
              *, log: EventLog | None = None, heatmap: bool = False) -> Report:
    """Every table of the report from the loaded records and events (and, if ``heatmap``
    is asked, the HTML's status grid). A bare DuckDB connection is one whose derived tables
    are not made yet."""
    if isinstance(engine, duckdb.DuckDBPyConnection):
        engine = DuckDBEngine(engine)
        derive(engine)
    log = log or EventLog()
    summary = engine.query("summary", sql.SUMMARY).records()[0]
    tables = [engine.query(name, text) for name, text in TABLE_QUERIES]
    tables.append(engine.query("probes", sql.PROBES, [window.until]))
    tables += [timeline.events_table(log, window), timeline.outages_table(log, window)]
    summary.update(files=stats.files, open_segments=stats.open_segments,
                   corrupt_lines=stats.corrupt_lines, event_files=stats.event_files,
                   events=len(tables[-2].rows), outage_periods=len(tables[-1].rows))
    if heatmap:
        tables.append(grid_table(engine, summary))
    return Report(window=window, stats=stats, summary=summary, tables=tuple(tables))


def build_report(paths: Iterable[Path], window: Window | None = None, *,
                 memory_limit: str = MEMORY_LIMIT, heatmap: bool = False,
                 engine: str = "duckdb", master: str | None = None) -> Report:
    """The report over every segment (or the store) under ``paths`` within ``window``
    (default: all), computed by ``engine``."""
    window = window or Window()
    with opened(paths, window, engine=engine, master=master,
                memory_limit=memory_limit) as ready:
        return summarise(ready.engine, ready.stats, window, log=ready.log, heatmap=heatmap)
