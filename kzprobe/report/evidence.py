"""Where a target's evidence is: segment file, line number and measurement uid of its
latest record (its latest blocked record if it is blocked now).

The scan into DuckDB does not keep file names or line numbers of good records (it would
slow the one scan every format pays for), so the HTML report finds them afterwards, for
the targets it lists only: each target's latest record is looked for in the segments whose
names say they may hold its time (:func:`kzprobe.report.scan.prune`), each file read once
with the reader the scan uses, so the line numbers agree with the ones in read errors. The
work is bounded (``MAX_FILES`` files, ``MAX_TARGETS`` targets); a target not found within
it simply gets no link.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from kzprobe.report.model import TIME_FORMAT, Report, ReportError, Table, Window
from kzprobe.report.scan import list_files, prune
from kzprobe.storage.segments import MAX_LINE_BYTES, current, iter_lines

MAX_TARGETS = 500  # the targets the HTML table shows
MAX_FILES = 16  # segment files read to find them (each up to [output] rotate_bytes)
EVIDENCE_COLUMNS = ("input", "probe_asn", "measurement_start_time", "file", "line", "uid",
                    "href")

_TIME = re.compile(rb'"measurement_start_time"\s*:\s*"([^"]*)"')
Key = tuple[str, str | None, str]  # input, probe_asn, measurement_start_time


def _wanted(report: Report) -> list[Key]:
    """Each listed target's latest record: its latest blocked one if it is blocked now."""
    rows = report.table("targets").records()[:MAX_TARGETS]
    return [(r["input"], r["probe_asn"], when) for r in rows
            if (when := r["last_blocked"] if r["state"] == "blocked" else r["last_seen"])]


def _candidates(files: list[Path], wanted: list[Key]) -> dict[Path, set[Key]]:
    """The files that may hold each wanted record, judged by their names."""
    by_time: dict[str, set[Key]] = {}
    for key in wanted:
        by_time.setdefault(key[2], set()).add(key)
    found: dict[Path, set[Key]] = {}
    for when, keys in by_time.items():
        start = datetime.strptime(when, TIME_FORMAT)
        for path in prune(files, Window(since=start, until=start + timedelta(seconds=1))):
            found.setdefault(path, set()).update(keys)
    return found


def _key(line: bytes) -> tuple[Key, str | None] | None:
    """A record's (input, probe_asn, time) and uid, or None if the line is no record."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    url, asn, when = (value.get(k) for k in ("input", "probe_asn", "measurement_start_time"))
    if not isinstance(url, str) or not isinstance(when, str):
        return None
    uid = value.get("x_measurement_uid")
    return (url, asn if isinstance(asn, str) else None, when), (
        uid if isinstance(uid, str) else None)


def _search(path: Path, keys: set[Key], out: dict[Key, tuple[Any, ...]]) -> None:
    """Record in ``out`` the last line of ``path`` matching each key (latest wins).

    Only a line whose time is one of the wanted times is parsed: finding the time costs a
    regex search, parsing the record costs a hundred times more."""
    times = {k[2].encode() for k in keys}
    for lineno, line in iter_lines(current(path), max_line_bytes=MAX_LINE_BYTES):
        when = _TIME.search(line)
        if when is None or when.group(1) not in times:
            continue
        found = _key(line)
        if found is not None and found[0] in keys:
            key, uid = found
            out[key] = (*key, str(path), lineno, uid, path.resolve().as_uri())


def locate(report: Report, paths: Iterable[Path]) -> Table:
    """The ``evidence`` table: one row per listed target whose latest record was found."""
    wanted = _wanted(report)
    try:
        files = list_files(paths)
    except ReportError:
        files = []
    candidates = _candidates(files, wanted)
    ordered = sorted(candidates, key=lambda p: (-len(candidates[p]), str(p)))[:MAX_FILES]
    out: dict[Key, tuple[Any, ...]] = {}
    for path in sorted(ordered):
        _search(path, candidates[path] - out.keys(), out)
    return Table("evidence", EVIDENCE_COLUMNS, tuple(out[k] for k in wanted if k in out))


def attach(report: Report, paths: Iterable[Path]) -> Report:
    """The report with its ``evidence`` table (for the HTML page's links)."""
    return dataclasses.replace(report, tables=(*report.tables, locate(report, paths)))
