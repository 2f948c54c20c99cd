"""The ``kzprobe report`` command below the CLI: arguments in, rendered bytes out."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from kzprobe.report import evidence, parquet
from kzprobe.report.build import ENGINES, MEMORY_LIMIT, opened, summarise
from kzprobe.report.model import Report, ReportError, Window
from kzprobe.report.render import CSV_TABLES, to_csv, to_json, to_text

FORMATS = ("table", "csv", "json", "html")
_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B)", re.IGNORECASE)
_AGO = re.compile(r"(\d+)\s*([smhdw])")  # --since 24h: that long before now
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRequest:
    """One ``kzprobe report`` invocation, already parsed."""

    paths: tuple[Path, ...]
    window: Window = field(default_factory=Window)
    format: str = "table"
    table: str | None = None  # --format csv only
    export_parquet: Path | None = None
    memory_limit: str = MEMORY_LIMIT
    engine: str = "duckdb"  # or "spark" (build.ENGINES)
    master: str | None = None  # --engine spark: the Spark master URL


def parse_when(option: str, text: str, now: datetime | None = None) -> datetime:
    """``YYYY-MM-DD[ HH:MM[:SS]]``, ISO 8601 with an offset, or a time ago (``24h``, ``7d``,
    ``30m``, ``2w``, ``90s``), as naive UTC."""
    ago = _AGO.fullmatch(text.strip().lower())
    if ago:
        now = now if now is not None else datetime.now(UTC).replace(tzinfo=None)
        try:
            return now - timedelta(seconds=int(ago[1]) * _UNIT_SECONDS[ago[2]])
        except OverflowError:
            raise ReportError(f"{option}: {text!r} is before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{option}: not a time: {text!r} (use YYYY-MM-DD, "
                          "'YYYY-MM-DD HH:MM:SS' (UTC) or a time ago: 24h, 7d)") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def make_window(since: str | None, until: str | None) -> Window:
    """The ``--since``/``--until`` window; an empty one is an error."""
    now = datetime.now(UTC).replace(tzinfo=None)  # one "now" for both relative times
    window = Window(since=parse_when("--since", since, now) if since else None,
                    until=parse_when("--until", until, now) if until else None)
    if window.since and window.until and window.since >= window.until:
        raise ReportError("--since must be before --until")
    return window


def check_table(fmt: str, table: str | None) -> None:
    """``--table`` is honoured by ``--format csv`` and refused by the others, never ignored."""
    if table is not None and fmt != "csv":
        raise ReportError(f"--table: only with --format csv (--format {fmt} shows every table)")


def render(report: Report, fmt: str, table: str | None) -> bytes:
    """The report in one of ``FORMATS``; ``table`` picks the CSV table (no other format has
    one: the text, JSON and HTML reports hold every table)."""
    check_table(fmt, table)
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        table = table or "targets"
        if table not in CSV_TABLES:
            raise ReportError(f"--table: one of {', '.join(CSV_TABLES)}")
        return to_csv(report, table)
    if fmt == "html":
        try:
            from kzprobe.report.html import to_html  # plotly is only needed here
        except ImportError as exc:
            raise ReportError(f"--format html: {exc.name} is not importable; reinstall "
                              f"kzprobe (pip install --force-reinstall kzprobe)") from None
        return to_html(report)
    return to_text(report)


def _quiet(note: str) -> None:
    """The default for :func:`run`'s ``tell``: say nothing."""


def run(request: ReportRequest, tell: Callable[[str], None] = _quiet) -> bytes:
    """Scan once; export Parquet if asked (``tell`` says what was written); render."""
    check_table(request.format, request.table)  # before the scan, not after
    if request.export_parquet is not None:
        parquet.check_target(request.export_parquet)
    with opened(request.paths, request.window, engine=request.engine, master=request.master,
                memory_limit=request.memory_limit) as ready:
        if request.export_parquet is not None:
            if ready.con is None:
                raise ReportError("--export-parquet: the input is a Parquet store already")
            days = parquet.export(ready.con, request.export_parquet)
            tell(_exported(ready.con, request.export_parquet, days))
        report = summarise(ready.engine, ready.stats, request.window, log=ready.log,
                           heatmap=request.format == "html")
    if request.format == "html":  # the targets table links each one's latest record
        report = evidence.attach(report, request.paths)
    return render(report, request.format, request.table)


def _exported(con: duckdb.DuckDBPyConnection, directory: Path, days: int) -> str:
    """``--export-parquet``: rows, files and day partitions written, and where."""
    counted = con.execute("SELECT count(*) FROM m").fetchone()
    rows = int(counted[0]) if counted else 0
    files = sum(1 for _ in directory.rglob("*.parquet"))
    return (f"exported {rows} rows to {files} Parquet file{'' if files == 1 else 's'} "
            f"in {days} day partition{'' if days == 1 else 's'} under {directory}/")


def write_output(data: bytes, output: Path) -> None:
    """Write the report to a file whole or not at all (a temporary file renamed into place).

    Anything that exists and is not a regular file (``/dev/null``, a FIFO, a terminal) is
    written to as it is: renaming over it would replace the device with a file.
    """
    if output.exists() and not output.is_file():
        try:
            with open(output, "wb") as out:
                out.write(data)
        except OSError as exc:
            raise ReportError(f"{output}: cannot write: {exc.strerror}") from None
        return
    directory = output.parent if str(output.parent) else Path(".")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
        try:
            os.fchmod(handle, 0o644)  # a report is for sharing, unlike the mkstemp default
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(name, output)
        except BaseException:
            os.unlink(name)
            raise
    except OSError as exc:
        raise ReportError(f"{output}: cannot write: {exc.strerror}") from None


def check_memory_limit(text: str) -> str:
    """A DuckDB size such as ``512MB`` or ``2GiB``."""
    if not _SIZE.fullmatch(text.strip()):
        raise ReportError(f"--memory-limit: not a size: {text!r} (e.g. 512MB, 2GB)")
    return text.strip()


def request_from(paths: Sequence[Path], *, since: str | None, until: str | None, fmt: str,
                 table: str | None, export_parquet: Path | None,
                 memory_limit: str = MEMORY_LIMIT, engine: str = "duckdb",
                 master: str | None = None) -> ReportRequest:
    """A request from the command line's values, times and size checked."""
    if engine not in ENGINES:
        raise ReportError(f"--engine: one of {', '.join(ENGINES)}")
    if master is not None and engine != "spark":
        raise ReportError("--master: only with --engine spark")
    return ReportRequest(paths=tuple(paths), window=make_window(since, until), format=fmt,
                         table=table, export_parquet=export_parquet,
                         memory_limit=check_memory_limit(memory_limit), engine=engine,
                         master=master)
