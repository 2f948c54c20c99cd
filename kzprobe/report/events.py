"""The change-event log next to the segments: ``events-YYYYMMDD.ndjson``, read bounded.

The alert tracker appends one JSON object per confirmed change (a target's ``blocked``,
``unblocked``, ``mechanism_changed``, ``down``, ``up``; the network's ``outage``,
``recovered``, ``degraded``) to a file per UTC day in the output directory, the one the
segments are in (docs/report.md, "Change events"). The writer may be appending while the
report reads, so a last line without its newline is a write in progress and is skipped
silently; a line that does not parse is reported with file and line, never raised.
Unknown keys are ignored and unknown kinds kept, so a newer writer does not break an older
report. Lines, bytes per file and events kept are all capped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from kzprobe.report.model import Window
from kzprobe.storage.naming import EVENT_LOG
from kzprobe.storage.segments import ErrorHandler

EVENTS_FILE = EVENT_LOG
MAX_EVENTS = 100_000  # kept per report, newest first; the report says when older ones are left
MAX_EVENT_LINE_BYTES = 1 << 20  # an event is a few hundred bytes; evidence lists stay short
MAX_EVENTS_FILE_BYTES = 256 << 20  # per file: a day of events is kilobytes
MAX_EVIDENCE = 20  # evidence ids kept per event
NETWORK_SCOPE = "network"
NETWORK_KINDS = frozenset({"outage", "recovered", "degraded"})  # issue 17; other kinds: targets
# A file holds the events confirmed on its UTC day; ``at`` precedes the confirmation by
# a few sweeps, and clocks get stepped: a day of slack keeps pruning by --since safe.
_DAY_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One confirmed change, the fields a report shows (times are naive UTC)."""

    at: datetime
    kind: str
    scope: str  # "target" or "network"
    event_id: str | None = None
    seq: int | None = None
    confirmed_at: datetime | None = None
    input: str | None = None
    group: str | None = None
    probe_cc: str | None = None
    probe_asn: str | None = None
    probe_id: str | None = None
    category_code: str | None = None
    from_state: str | None = None
    from_mechanism: str | None = None
    to_state: str | None = None
    to_mechanism: str | None = None
    sni_blocking_confirmed: bool | None = None
    blockpage: str | None = None
    evidence: tuple[str, ...] = ()
    summary: str | None = None

    @property
    def is_network(self) -> bool:
        """A change of the network's state (an outage), not of one target."""
        return self.scope == NETWORK_SCOPE


@dataclass(frozen=True, slots=True)
class EventLog:
    """The events read: in time order, one per ``event_id``, and what was left unread."""

    events: tuple[Event, ...] = ()
    files: int = 0
    not_read: int = 0  # older events of a file read in part, left out by MAX_EVENTS
    files_not_read: int = 0  # older files not opened once MAX_EVENTS were kept


def is_events_file(name: str) -> bool:
    """True for the name of a day's event log (``events-YYYYMMDD.ndjson``)."""
    return EVENTS_FILE.fullmatch(name) is not None


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The event logs for the report's paths, by name (so in day order).

    A directory gives its own event logs; a segment file gives those of its directory
    (events are per output directory, not per segment); an event log named on the
    command line is read as it is.
    """
    directories: set[Path] = set()
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            directories.add(path)
        elif is_events_file(path.name):
            found.add(path)
        else:
            directories.add(path.parent)
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                found.update(Path(e.path) for e in entries
                             if is_events_file(e.name) and e.is_file())
        except OSError:
            continue  # a missing directory is the segment listing's error to report
    return sorted(found, key=lambda p: (p.name, str(p)))


def _day(path: Path) -> datetime | None:
    match = EVENTS_FILE.fullmatch(path.name)
    try:
        return datetime.strptime(match["day"], "%Y%m%d") if match else None
    except ValueError:
        return None


def prune(files: Iterable[Path], window: Window) -> list[Path]:
    """Drop the days that ended more than a day before ``since`` (their events are older)."""
    if window.since is None:
        return list(files)
    return [p for p in files
            if (day := _day(p)) is None or day + timedelta(days=1) + _DAY_SLACK > window.since]


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``2026-12-07T14:05:00Z``) as naive UTC; naive text is taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _side(value: Any) -> tuple[str | None, str | None]:
    """``{"state", "interference"}`` as (state, mechanism): codes sorted, joined with ``+``."""
    if not isinstance(value, dict):
        return None, None
    codes = value.get("interference")
    codes = sorted(c for c in codes if isinstance(c, str)) if isinstance(codes, list) else []
    return _text(value.get("state")), "+".join(codes) or None


def _evidence(value: Any) -> tuple[str, ...]:
    """Measurement ids (target events) or ``anchor (scope): failure`` (network events)."""
    if not isinstance(value, list):
        return ()
    out: list[str] = []
    for item in value[:MAX_EVIDENCE]:
        if not isinstance(item, dict):
            continue
        if uid := _text(item.get("measurement_uid")):
            out.append(uid)
        elif anchor := _text(item.get("anchor")):
            scope, failure = _text(item.get("scope")), _text(item.get("failure"))
            out.append(anchor + (f" ({scope})" if scope else "") + f": {failure or 'ok'}")
    return tuple(out)


def parse_event(value: Any) -> Event | str:
    """The event in one decoded line, or why it is not one."""
    if not isinstance(value, dict):
        return f"not a JSON object: {type(value).__name__}"
    kind = _text(value.get("kind"))
    if not kind:
        return "no 'kind' string"
    at = parse_time(value.get("at"))
    if at is None:
        return "no 'at' time (ISO 8601)"
    url = _text(value.get("input"))
    network = value.get("scope") == NETWORK_SCOPE or kind in NETWORK_KINDS
    if not network and not url:
        return "no 'input' string (a target's event)"
    from_state, from_mechanism = _side(value.get("from"))
    to_state, to_mechanism = _side(value.get("to"))
    seq = value.get("seq")
    sni = value.get("sni_blocking_confirmed")
    return Event(
        at=at, kind=kind, scope=NETWORK_SCOPE if network else "target",
        event_id=_text(value.get("event_id")),
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        confirmed_at=parse_time(value.get("confirmed_at")), input=url,
        group=_text(value.get("group")), probe_cc=_text(value.get("probe_cc")),
        probe_asn=_text(value.get("probe_asn")), probe_id=_text(value.get("probe_id")),
        category_code=_text(value.get("category_code")), from_state=from_state,
        from_mechanism=from_mechanism, to_state=to_state, to_mechanism=to_mechanism,
        sni_blocking_confirmed=sni if isinstance(sni, bool) else None,
        blockpage=_text(value.get("blockpage")), evidence=_evidence(value.get("evidence")),
        summary=_text(value.get("summary")))


def _skip_line(stream: IO[bytes], left: int) -> int:
    """Read past the rest of an over-long line; the bytes consumed."""
    skipped = 0
    while skipped < left and (chunk := stream.readline(min(1 << 16, left - skipped))):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _lines(stream: IO[bytes], path: Path, report: ErrorHandler) -> Iterator[tuple[int, bytes]]:
    """Complete lines, each and the file capped; a torn tail ends the file silently."""
    left, lineno = MAX_EVENTS_FILE_BYTES, 0
    while left > 0 and (line := stream.readline(min(MAX_EVENT_LINE_BYTES + 1, left))):
        lineno += 1
        left -= len(line)
        if line.endswith(b"\n"):
            yield lineno, line
        elif len(line) > MAX_EVENT_LINE_BYTES:
            report(path, lineno, f"line longer than {MAX_EVENT_LINE_BYTES} bytes")
            left -= _skip_line(stream, left)
        elif left > 0:
            return  # the writer's line in progress (or a kill -9's leftover)
    if left <= 0 and stream.read(1):
        report(path, lineno, f"not read beyond {MAX_EVENTS_FILE_BYTES} bytes")


def read_file(path: Path, report: ErrorHandler) -> list[Event]:
    """The events of one log; unusable lines go to ``report``."""
    found: list[Event] = []
    lineno = 0
    try:
        with open(path, "rb") as stream:
            for lineno, line in _lines(stream, path, report):
                if not line.strip():
                    continue
                try:
                    event = parse_event(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    event = f"invalid JSON: {exc}"
                if isinstance(event, str):
                    report(path, lineno, event)
                else:
                    found.append(event)
    except OSError as exc:
        report(path, lineno, f"unreadable: {type(exc).__name__}: {exc}")
    return found


def _wanted(event: Event, window: Window) -> bool:
    """Target events inside the window; network events up to its end (outages that began
    before ``since`` are still open inside it)."""
    if window.until is not None and event.at >= window.until:
        return False
    return event.is_network or window.since is None or event.at >= window.since


def read_log(paths: Iterable[Path], window: Window, report: ErrorHandler) -> EventLog:
    """The events for a report over ``paths``: newest files first until MAX_EVENTS are kept."""
    files = prune(find_files(paths), window)
    kept: list[Event] = []
    seen: set[str] = set()
    not_read = files_left = 0
    for index, path in enumerate(reversed(files)):
        room = MAX_EVENTS - len(kept)
        if room <= 0:
            files_left = len(files) - index
            break
        fresh = [e for e in read_file(path, report) if _wanted(e, window) and _first(e, seen)]
        not_read += max(0, len(fresh) - room)
        kept.extend(fresh[-room:])
    kept.sort(key=lambda e: (e.at, e.seq if e.seq is not None else -1, e.event_id or ""))
    return EventLog(events=tuple(kept), files=len(files), not_read=not_read,
                    files_not_read=files_left)


def _first(event: Event, seen: set[str]) -> bool:
    """False for an event already read (the same id in a copied directory)."""
    if event.event_id is None:
        return True
    if event.event_id in seen:
        return False
    seen.add(event.event_id)
    return True
