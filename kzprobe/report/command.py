"""The ``kzprobe report`` command below the CLI: arguments in, rendered bytes out."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kzprobe.report import parquet
from kzprobe.report.build import ENGINES, MEMORY_LIMIT, opened, summarise
from kzprobe.report.model import Report, ReportError, Window
from kzprobe.report.render import CSV_TABLES, to_csv, to_json, to_text

FORMATS = ("table", "csv", "json", "html")
_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B)", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRequest:
    """One ``kzprobe report`` invocation, already parsed."""

    paths: tuple[Path, ...]
    window: Window = field(default_factory=Window)
    format: str = "table"
    table: str = "targets"
    export_parquet: Path | None = None
    memory_limit: str = MEMORY_LIMIT
    engine: str = "duckdb"  # or "spark" (build.ENGINES)
    master: str | None = None  # --engine spark: the Spark master URL


def parse_when(option: str, text: str) -> datetime:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` or ISO 8601 with an offset, as naive UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{option}: not a time: {text!r} "
                          "(use YYYY-MM-DD or 'YYYY-MM-DD HH:MM:SS', UTC)") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def make_window(since: str | None, until: str | None) -> Window:
    """The ``--since``/``--until`` window; an empty one is an error."""
    window = Window(since=parse_when("--since", since) if since else None,
                    until=parse_when("--until", until) if until else None)
    if window.since and window.until and window.since >= window.until:
        raise ReportError("--since must be before --until")
    return window


def render(report: Report, fmt: str, table: str) -> bytes:
    """The report in one of ``FORMATS``."""
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
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


def run(request: ReportRequest) -> bytes:
    """Scan once; export Parquet if asked; render the report."""
    if request.export_parquet is not None:
        parquet.check_target(request.export_parquet)
    with opened(request.paths, request.window, engine=request.engine, master=request.master,
                memory_limit=request.memory_limit) as ready:
        if request.export_parquet is not None:
            if ready.con is None:
                raise ReportError("--export-parquet: the input is a Parquet store already")
            parquet.export(ready.con, request.export_parquet)
        report = summarise(ready.engine, ready.stats, request.window, log=ready.log,
                           heatmap=request.format == "html")
    return render(report, request.format, request.table)


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
                 table: str, export_parquet: Path | None,
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
