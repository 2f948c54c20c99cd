"""The event log as report tables: ``events`` (every change) and ``outages`` (periods).

An outage period is a run of one network state other than ``online``, per probe network
(``probe_asn`` and ``probe_id``: two probes in one ISP may see different outages), from
the event that entered it to the event that left it. A period whose first event is
outside what was read starts at null ("before the first event read"); one still open ends
at null ("ongoing"), and then has no duration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from kzprobe.report.events import Event, EventLog
from kzprobe.report.model import TIME_FORMAT, Table, Window

ONLINE = "online"
EVENT_COLUMNS = (
    "at", "confirmed_at", "kind", "scope", "probe_cc", "probe_asn", "probe_id", "input",
    "group", "category_code", "from_state", "from_mechanism", "to_state", "to_mechanism",
    "sni_blocking_confirmed", "blockpage", "evidence", "event_id", "summary")
OUTAGE_COLUMNS = ("probe_cc", "probe_asn", "probe_id", "state", "start", "end", "duration_s",
                  "duration")


@dataclass(frozen=True, slots=True)
class Period:
    """One run of a network state other than ``online``."""

    probe_cc: str | None
    probe_asn: str | None
    probe_id: str | None
    state: str
    start: datetime | None  # None: began before the first event read
    end: datetime | None  # None: still open (ongoing)


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.strftime(TIME_FORMAT)


def in_window(event: Event, window: Window) -> bool:
    """``since <= at < until``, the records' rule."""
    return ((window.since is None or event.at >= window.since)
            and (window.until is None or event.at < window.until))


def events_table(log: EventLog, window: Window) -> Table:
    """Every event in the window, target and network, in time order."""
    rows = tuple(
        (_time(e.at), _time(e.confirmed_at), e.kind, e.scope, e.probe_cc, e.probe_asn,
         e.probe_id, e.input, e.group, e.category_code, e.from_state, e.from_mechanism,
         e.to_state, e.to_mechanism, e.sni_blocking_confirmed, e.blockpage, list(e.evidence),
         e.event_id, e.summary)
        for e in log.events if in_window(e, window))
    return Table("events", EVENT_COLUMNS, rows)


def _network_periods(events: Sequence[Event]) -> list[Period]:
    """The non-online runs of one network's state changes (in time order)."""
    first = events[0]
    ident = (first.probe_cc, first.probe_asn, first.probe_id)
    periods: list[Period] = []
    state = first.from_state if first.from_state not in (None, ONLINE) else None
    start: datetime | None = None
    for event in events:
        new = event.to_state or "unknown"
        if new == state:
            continue  # the same state again (a repeated or re-confirmed event)
        if state is not None:
            periods.append(Period(*ident, state, start, event.at))
        state, start = (None, None) if new == ONLINE else (new, event.at)
    if state is not None:
        periods.append(Period(*ident, state, start, None))
    return periods


def periods(events: Iterable[Event]) -> list[Period]:
    """Outage periods of every probe network, by start (unknown starts first)."""
    by_network: dict[tuple[str | None, str | None], list[Event]] = {}
    for event in events:
        if event.is_network:
            by_network.setdefault((event.probe_asn, event.probe_id), []).append(event)
    found = [p for group in by_network.values() for p in _network_periods(group)]
    return sorted(found, key=lambda p: (p.start is not None, p.start or datetime.min,
                                        p.probe_asn or "", p.probe_id or ""))


def _overlaps(period: Period, window: Window) -> bool:
    if window.since is not None and period.end is not None and period.end <= window.since:
        return False
    return not (window.until is not None and period.start is not None
                and period.start >= window.until)


def duration(seconds: int) -> str:
    """``45s``, ``12m 05s``, ``3h 07m``, ``2d 04h``: readable at a glance."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def outages_table(log: EventLog, window: Window) -> Table:
    """Outage periods that overlap the window: start, end, state and duration."""
    rows = []
    for p in periods(log.events):
        if not _overlaps(p, window):
            continue
        seconds = (None if p.start is None or p.end is None
                   else int((p.end - p.start).total_seconds()))
        rows.append((p.probe_cc, p.probe_asn, p.probe_id, p.state, _time(p.start),
                     _time(p.end), seconds, None if seconds is None else duration(seconds)))
    return Table("outages", OUTAGE_COLUMNS, tuple(rows))


def describe(row: dict[str, object]) -> str:
    """One event as a timeline line: when, where, what, from what to what."""
    def side(state: object, mechanism: object) -> str:
        return f"{state or '?'}" + (f" ({mechanism})" if mechanism else "")

    what = row["input"] if row["scope"] != "network" else "network"
    extra = [f"group {row['group']}"] if row.get("group") else []
    if row.get("sni_blocking_confirmed"):
        extra.append("SNI confirmed")
    if row.get("blockpage"):
        extra.append(f"blockpage {row['blockpage']}")
    where = "/".join(str(v) for v in (row["probe_asn"], row["probe_id"]) if v)
    return (f"{row['at']} UTC  {where or '?'}  {row['kind']}: {what}: "
            f"{side(row['from_state'], row['from_mechanism'])} -> "
            f"{side(row['to_state'], row['to_mechanism'])}"
            + (f" [{', '.join(extra)}]" if extra else ""))


def shown_outages(table: Table) -> Table:
    """The outages table for reading: an open start is "before", an open end "ongoing"."""
    start, end = table.columns.index("start"), table.columns.index("end")
    rows = tuple(tuple("before" if i == start and v is None else
                       "ongoing" if i == end and v is None else v
                       for i, v in enumerate(row)) for row in table.rows)
    return Table(table.name, table.columns, rows)
