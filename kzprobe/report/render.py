"""Plain renderings of a report: a terminal summary, one CSV table, the whole as JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

from kzprobe.report import events
from kzprobe.report.model import Report, Table
from kzprobe.report.timeline import describe, shown_outages
from kzprobe.text import plural

JSON_FORMAT_VERSION = 1
CSV_TABLES = ("targets", "changes", "periods", "categories", "networks", "network_compare",
              "probes", "days", "mechanisms", "events", "outages", "errors")
MAX_TEXT_EVENTS = 200  # the latest events in the terminal; JSON and CSV carry every one

# The columns a terminal has room for; JSON and CSV carry every column.
_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "targets": ("input", "probe_asn", "category_code", "state", "mechanism", "since",
                "measurements", "blocked_share", "blockpages", "mitm_issuers"),
    "changes": ("at", "after", "input", "probe_asn", "from_state", "from_mechanism",
                "to_state", "to_mechanism"),
    "outages": ("probe_asn", "probe_id", "state", "start", "end", "duration"),
}
_TEXT_TABLES = ("targets", "changes", "categories", "networks", "network_compare", "probes",
                "days", "mechanisms")


def notes(report: Report) -> list[str]:
    """What a reader must know to read the figures: outage records left out, events capped."""
    out = [f"Blocked counts and shares leave out the {report.summary['outage_records']} "
           "measurements taken during a network outage (records with x_outage: true)."]
    stats = report.stats
    if stats.events_not_read or stats.event_files_not_read:
        out.append(f"Only the newest {events.MAX_EVENTS} events were read: {stats.events_not_read} "
                   f"older events and {stats.event_files_not_read} older event files were "
                   "left out (narrow the report with --since).")
    return out
_TEXT_MAX_WIDTH = 60


def errors_table(report: Report) -> Table:
    """The unusable lines as a table (file, line, reason)."""
    rows = tuple((str(e.file), e.line, e.reason) for e in report.stats.errors)
    return Table("errors", ("file", "line", "reason"), rows)


def _window(report: Report) -> dict[str, str | None]:
    since, until = report.window.since, report.window.until
    return {"since": since.isoformat(sep=" ") if since else None,
            "until": until.isoformat(sep=" ") if until else None}


def to_json(report: Report) -> bytes:
    """The whole report: summary, window, read errors and every table as row objects."""
    document: dict[str, Any] = {
        "kzprobe_report": JSON_FORMAT_VERSION,
        "window": _window(report),
        "summary": report.summary,
        "notes": notes(report),
        "errors": errors_table(report).records(),
    }
    for table in report.tables:
        document[table.name] = table.records()
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(_cell(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(report: Report, name: str) -> bytes:
    """One table as CSV (lists joined with ``;``, null as empty)."""
    table = errors_table(report) if name == "errors" else report.table(name)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([_cell(v) for v in row] for row in table.rows)
    return out.getvalue().encode()


def blocked_now(report: Report) -> list[str]:
    """One line per target blocked now, as a journalist would quote it."""
    lines = []
    for row in report.table("targets").records():
        if row["state"] != "blocked":
            continue
        when = ("since the first measurement" if row["since_after"] is None
                else f"changed after {row['since_after']} UTC")
        lines.append(f"{row['input']} [{row['probe_asn']}]: blocked since {row['since']} UTC, "
                     f"{row['mechanism']} ({when})")
    return lines


def timeline_lines(report: Report, limit: int = MAX_TEXT_EVENTS) -> list[str]:
    """The latest ``limit`` events, one quotable line each, oldest first."""
    rows = report.table("events").records()
    lines = [describe(row) for row in rows[-limit:]] if limit else []
    if len(rows) > limit:
        lines.insert(0, f"({len(rows) - limit} earlier events: --format json, or csv "
                        "--table events)")
    return lines


def _aligned(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    widths = [min(w, _TEXT_MAX_WIDTH) for w in widths]
    fmt = "  ".join(f"{{:<{w}.{w}}}" for w in widths)
    return [fmt.format(*columns).rstrip()] + [fmt.format(*row).rstrip() for row in rows]


def _text_table(table: Table) -> list[str]:
    columns = _TEXT_COLUMNS.get(table.name, table.columns)
    index = [table.columns.index(c) for c in columns]
    rows = [[_cell(row[i]) for i in index] for row in table.rows]
    return [f"== {table.name} ({len(rows)})", *_aligned(columns, rows), ""]


def to_text(report: Report) -> bytes:
    """A terminal summary: counts, targets blocked now, then the main tables."""
    s = report.summary
    lines = [
        f"kzprobe report: {s['records']} records from {s['files']} files "
        f"({s['open_segments']} open), {s['corrupt_lines']} corrupt lines",
        f"measured {s['first_seen']} .. {s['last_seen']} UTC: {s['urls']} URLs on "
        f"{plural(s['networks'], 'network')}, {s['targets_blocked_now']} blocked now, "
        f"{plural(s['changes'], 'change')}" if s["records"] else "no records in the window",
        f"{s['events']} change events and {s['outage_periods']} outage periods from "
        f"{s['event_files']} event files",
        *notes(report),
        "",
        "== blocked now",
        *blocked_now(report),
        "",
        f"== events ({len(report.table('events').rows)})",
        *timeline_lines(report),
        "",
        *_text_table(shown_outages(report.table("outages"))),
    ]
    for name in _TEXT_TABLES:
        lines += _text_table(report.table(name))
    if report.stats.errors:
        lines += _text_table(errors_table(report))
    return "\n".join(lines).encode()
