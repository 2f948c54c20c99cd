"""The values a report is made of: read problems and named tables of rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kzprobe.errors import KzprobeError

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # OONI's measurement_start_time, always UTC


class ReportError(KzprobeError):
    """Bad report input (no segments, a bad time, an export directory in use): exit 2."""


@dataclass(frozen=True, slots=True)
class ReadError:
    """One line (or file, line 0) that could not be used, and why."""

    file: Path
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Table:
    """A rectangular result: column names and rows of JSON-ready values."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}`` objects (the JSON form)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class Window:
    """The ``--since``/``--until`` filter: ``since <= measurement_start_time < until``."""

    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReadStats:
    """What the reader saw: files by kind, usable records, and the unusable lines."""

    files: int
    open_segments: int
    records: int
    corrupt_lines: int  # segments' and event logs' unusable lines
    errors: tuple[ReadError, ...] = field(default=())
    event_files: int = 0
    events_not_read: int = 0  # older events left out by the cap on events kept
    event_files_not_read: int = 0  # older event logs not opened once the cap was reached


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a renderer needs; tables are in presentation order."""

    window: Window
    stats: ReadStats
    summary: dict[str, Any]
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        """The table called ``name`` (KeyError if there is none)."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)
