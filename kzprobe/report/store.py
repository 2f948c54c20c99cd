"""A Parquet store (``kzprobe export``) as report input: found, listed, loaded into ``m``.

``kzprobe report STORE`` reads the store's ``measurements`` instead of segments: the same
table ``m`` (the store keeps every column of it, docs/parquet-schema.md), so every query
runs unchanged. The store's ``events`` become the report's events and outages, as event logs
beside segments do. A store is a directory with a ``measurements`` directory in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from kzprobe.report import sql
from kzprobe.report.events import MAX_EVENTS, Event, EventLog
from kzprobe.report.model import ReadStats, ReportError, Window

MEASUREMENTS = "measurements"  # kzprobe.report.export writes these two tables
EVENTS = "events"

_EVENTS = """
SELECT event_time, kind, scope, event_id, seq, confirmed_at, input, "group", probe_cc,
    probe_asn, probe_id, category_code, from_state, from_mechanism, to_state, to_mechanism,
    sni_blocking_confirmed, blockpage, coalesce(evidence, []), summary
FROM read_parquet($1, hive_partitioning = true, union_by_name = true)
WHERE ($2::TIMESTAMP IS NULL OR event_time >= $2::TIMESTAMP)
  AND ($3::TIMESTAMP IS NULL OR event_time < $3::TIMESTAMP)
QUALIFY event_id IS NULL
    OR row_number() OVER (PARTITION BY event_id ORDER BY event_time, seq NULLS LAST) = 1
ORDER BY event_time DESC, seq DESC NULLS LAST, event_id DESC
"""


def is_store(path: Path) -> bool:
    """A ``kzprobe export`` directory (it has ``measurements/``)."""
    return (path / MEASUREMENTS).is_dir()


def find(paths: Sequence[Path]) -> Path | None:
    """The store named on the command line, or None for segments; both at once is an error."""
    stores = [p for p in paths if is_store(Path(p))]
    if not stores:
        return None
    if len(paths) > 1:
        raise ReportError(f"{stores[0]}: a Parquet store is read alone, "
                          "not with other stores or segments")
    return Path(stores[0])


def files(store: Path, table: str = MEASUREMENTS) -> list[Path]:
    """The Parquet files of one table (the manifest and dot files are not data)."""
    return sorted(p for p in (store / table).rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.parts[-4:]))


def load(con: duckdb.DuckDBPyConnection, store: Path, window: Window) -> ReadStats:
    """Fill table ``m`` from the store's measurements within ``window``."""
    found = files(store)
    con.execute(sql.CREATE_TABLE)
    if found:
        con.execute(sql.INSERT_STORE, [[str(f) for f in found], window.since, window.until])
    records = con.execute("SELECT count(*) FROM m").fetchone()
    return ReadStats(files=len(found), open_segments=0,
                     records=int(records[0]) if records else 0, corrupt_lines=0)


def read_events(con: duckdb.DuckDBPyConnection, store: Path, window: Window) -> EventLog:
    """The store's events within ``window``: one per ``event_id``, the newest MAX_EVENTS."""
    found = files(store, EVENTS)
    if not found:
        return EventLog()
    cursor = con.execute(_EVENTS, [[str(f) for f in found], window.since, window.until])
    rows = cursor.fetchmany(MAX_EVENTS + 1)
    kept = [_event(row) for row in rows[:MAX_EVENTS]]
    kept.reverse()
    return EventLog(events=tuple(kept), files=len(found),
                    not_read=len(rows) - len(kept))


def _event(row: tuple[Any, ...]) -> Event:
    names = ("at", "kind", "scope", "event_id", "seq", "confirmed_at", "input", "group",
             "probe_cc", "probe_asn", "probe_id", "category_code", "from_state",
             "from_mechanism", "to_state", "to_mechanism", "sni_blocking_confirmed",
             "blockpage", "evidence", "summary")
    values: dict[str, Any] = dict(zip(names, row, strict=True))
    values["evidence"] = tuple(values["evidence"] or ())
    return Event(**values)
