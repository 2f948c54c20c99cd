"""``kzprobe export``: closed segments and event logs into a hive-partitioned Parquet store.

The store is the hand-off from probes to bigger engines (DuckDB, Spark, ClickHouse,
BigQuery): ``DIR/measurements/`` and ``DIR/events/``, each under
``probe_cc=/probe_asn=/date=``, columns in docs/parquet-schema.md. It is built to be run
again and again (from cron, after each rotation) and to be merged by copying directories:

* A segment is exported once. ``DIR/_manifest/<probe id>.json`` records each one by its
  plain name (``....ndjson``, the same before and after compression) and the SHA-256 of its
  decompressed content; the manifest is replaced atomically (once per batch), after the
  segment's files are in place, so a crash in between only means it is exported again.
* A segment's Parquet files are named after that hash and staged in ``DIR/.staging``
  before they are renamed into their partitions: exporting it again overwrites them (and
  removes any leftover of the same prefix), never duplicates its rows.
* Event logs grow during their day: one is exported again when its hash changes, into
  files named after the log's probe, day and first line, which a new version overwrites.
* File names carry a hash of the data, the manifest the probe id: two probes' stores
  copied into one directory do not clash.

Open segments (``.part``) are left for a later run. Bad lines are listed and skipped; a
segment that cannot be read is listed and not recorded, so a later run tries it again.

Segments are decompressed once and scanned by DuckDB in batches
(:mod:`kzprobe.report.export_scan`); one the scan cannot number line by line (a corrupt,
blank or unusable line, a torn end) is exported again the careful way, its lines checked
in Python, so both ways write the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson

from kzprobe.report import events as event_log
from kzprobe.report.export_scan import (
    BATCH_QUERY,
    COPY,
    EVENT_ROWS,
    MEASUREMENT_ROWS,
    SCHEMA_VERSION,
    WRAPPED_ROWS,
    Decoded,
    batches,
    decode_batch,
)
from kzprobe.report.model import ReportError
from kzprobe.report.scan import ErrorLog, connect, list_files, problem
from kzprobe.storage.naming import SegmentFile, SegmentName
from kzprobe.storage.segments import MAX_LINE_BYTES, is_open, iter_lines
from kzprobe.text import plural

MEASUREMENTS = "measurements"
EVENTS = "events"
MANIFESTS = "_manifest"
STAGING = ".staging"
LOCK = ".lock"
MEMORY_LIMIT = "1GB"
_UNKNOWN_PROBE = "unknown"
_BY = "probe_cc, probe_asn, date"  # the partitions
@dataclass(slots=True)
class ExportResult:
    """What one run did; ``errors`` are lines or whole files that were not exported
    (all counted, the first ``scan.MAX_ERRORS_KEPT`` kept)."""

    exported: int = 0
    skipped: int = 0
    open_segments: int = 0
    rows: int = 0
    event_files: int = 0
    event_rows: int = 0
    errors: ErrorLog = field(default_factory=ErrorLog)
    failed: list[Path] = field(default_factory=list)  # segments or logs not exported at all

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"exported {plural(self.exported, 'segment')} "
                f"({plural(self.rows, 'measurement')}), skipped "
                f"{self.skipped} already exported and {self.open_segments} open; "
                f"{self.event_files} event logs ({self.event_rows} events); "
                f"{len(self.failed)} files failed, {self.errors.count} problems")


@dataclass(frozen=True, slots=True)
class Staged:
    """One source file's rows as NDJSON for DuckDB, with the hash of its content."""

    path: Path
    sha256: str
    rows: int
    failed: bool


class Manifest:
    """Every probe's ``_manifest/<probe id>.json``: read all, write back the changed ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / MANIFESTS
        self.entries: dict[str, dict[str, dict[str, Any]]] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                self.entries[path.stem] = _read_manifest(path)

    def get(self, probe: str, key: str) -> dict[str, Any] | None:
        """The entry recorded for ``key`` (a segment or an event log) of ``probe``."""
        return self.entries.get(probe, {}).get(key)

    def record(self, probe: str, entries: dict[str, dict[str, Any]]) -> None:
        """Add entries (by key) and replace that probe's manifest atomically, once."""
        self.entries.setdefault(probe, {}).update(entries)
        self.directory.mkdir(parents=True, exist_ok=True)
        body = {"schema_version": SCHEMA_VERSION, "probe": probe,
                "files": dict(sorted(self.entries[probe].items()))}
        _write_atomic(self.directory / f"{probe}.json",
                      orjson.dumps(body, option=orjson.OPT_INDENT_2))


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        body = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ReportError(f"{path}: unreadable manifest: {exc}") from None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict):
        raise ReportError(f"{path}: not a kzprobe export manifest (no 'files' object)")
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def _write_atomic(path: Path, data: bytes) -> None:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def segment_probe(path: Path) -> str:
    """The probe id in a segment's name (or, in old names, the host)."""
    name = SegmentName.parse(path.name)
    return name.probe_id if name is not None else _UNKNOWN_PROBE


def segment_key(path: Path) -> str:
    """The plain ``....ndjson`` name a segment keeps through compression."""
    file = SegmentFile.parse(path.name)
    return file.plain if file is not None else path.name


class _Problems:
    """Passes problems on to the run's log; remembers whether the file was unreadable."""

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        self.failed = False

    def __call__(self, path: Path, line: int, reason: str) -> None:
        self.failed = self.failed or reason.startswith("unreadable")
        self.errors(path, line, reason)


def _stage_segment(path: Path, out: Path, errors: ErrorLog) -> Staged:
    """JSON objects wrapped as ``{"line": N, "r": record}``; the hash covers every line.

    Whether a record has its input and time is left to the SQL (Python's strptime would be
    half the export's time); :func:`_list_unusable` names the lines it dropped.
    """
    digest = hashlib.sha256()
    rows = 0
    report = _Problems(errors)

    with open(out, "wb") as staged:
        for lineno, line in iter_lines(path, on_error=report, max_line_bytes=MAX_LINE_BYTES):
            digest.update(line)
            digest.update(b"\n")
            if not line.strip():
                continue
            if not _is_object(line):  # one JSON object per line: no row can spill over
                report(path, lineno, problem(line) or "not a JSON object")
                continue
            staged.write(b'{"line":%d,"r":' % lineno + line.strip() + b"}\n")
            rows += 1
    return Staged(out, digest.hexdigest(), rows, report.failed)


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _list_unusable(path: Path, errors: ErrorLog) -> None:
    """The objects the SQL dropped (no input, no time), by line: the rare path, read again."""
    for lineno, line in iter_lines(path, max_line_bytes=MAX_LINE_BYTES):
        if line.strip() and _is_object(line) and (reason := problem(line)) is not None:
            errors(path, lineno, reason)


def _stage_events(path: Path, out: Path, errors: ErrorLog) -> tuple[Staged, str]:
    """An event log's events as NDJSON rows; also the probe id they name."""
    digest = hashlib.sha256()
    report = _Problems(errors)

    found = event_log.read_file(path, report)
    try:
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        report(path, 0, f"unreadable: {type(exc).__name__}: {exc}")
    probe = next((e.probe_id for e in found if e.probe_id), None) or _UNKNOWN_PROBE
    with open(out, "wb") as staged:
        for event in found:
            staged.write(orjson.dumps(_event_row(event, path.name)) + b"\n")
    return Staged(out, digest.hexdigest(), len(found), report.failed), probe


def _event_row(event: event_log.Event, source: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(event, name) for name in event.__slots__}
    del row["at"]  # a keyword in DuckDB's SQL: the store calls it event_time
    row["event_time"] = event.at.isoformat(sep=" ")
    row["confirmed_at"] = event.confirmed_at.isoformat(sep=" ") if event.confirmed_at else None
    row["evidence"] = list(event.evidence)
    row["source_file"] = source
    return row


def _place(staging: Path, table: Path, prefix: str) -> list[str]:
    """Rename the staged partition files (``..._N.parquet``) into ``table`` as
    ``<prefix>_N.parquet``; drop stale ones of ``prefix``."""
    placed: list[str] = []
    for file in sorted(staging.rglob("*.parquet")):
        relative = file.relative_to(staging).with_name(f"{prefix}_{file.name.rsplit('_')[-1]}")
        target = table / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
        placed.append(str(relative))
    fresh = {table / p for p in placed}
    for directory in {p.parent for p in fresh}:
        for old in directory.glob(f"{prefix}_*.parquet"):
            if old not in fresh:
                old.unlink()
    return placed


def _copy(con: duckdb.DuckDBPyConnection, query: str, source: Path, scratch: Path,
          prefix: str) -> int:
    """COPY the rows of ``source`` into a scratch tree; the rows written.

    Raises :class:`duckdb.Error` when DuckDB cannot write them.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    copied = con.execute(COPY.format(query=query, by=_BY, prefix=prefix),
                         [str(scratch), str(source)]).fetchone()
    return int(copied[0]) if copied else 0


def _move(scratch: Path, table: Path, prefix: str) -> list[str]:
    """:func:`_place` the scratch tree's files (if any), then remove it."""
    placed = _place(scratch, table, prefix) if scratch.exists() else []
    shutil.rmtree(scratch, ignore_errors=True)
    return placed


def _write_or_list(con: duckdb.DuckDBPyConnection, query: str, staged: Staged,
                   where: tuple[Path, str, Path], source: Path,
                   result: ExportResult) -> tuple[list[str], int] | None:
    """Write the staged rows and move them into the store; a DuckDB failure is listed
    against ``source`` (None: not exported, nothing placed), and so are rows it dropped."""
    table, prefix, staging = where
    scratch = staging / prefix
    try:
        written = _copy(con, query, staged.path, scratch, prefix) if staged.rows else 0
    except duckdb.Error as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        result.errors(source, 0, f"unreadable by DuckDB: {str(exc).splitlines()[0]}")
        result.failed.append(source)
        return None
    placed = _move(scratch, table, prefix)
    if written != staged.rows and table.name == MEASUREMENTS:
        _list_unusable(source, result.errors)
    elif written != staged.rows:
        result.errors(source, 0, f"{staged.rows - written} of {staged.rows} events "
                                 f"not written (DuckDB could not read them)")
    return placed, written


def _write_checked(con: duckdb.DuckDBPyConnection, path: Path, store: Path,
                   result: ExportResult) -> tuple[list[str], int, str] | None:
    """The careful path: each line validated in Python, bad ones listed and skipped."""
    staging = store / STAGING
    staged = _stage_segment(path, staging / "segment.ndjson", result.errors)
    if staged.failed:
        result.failed.append(path)
        return None
    prefix = f"m-{staged.sha256[:32]}"
    query = MEASUREMENT_ROWS.format(rows=WRAPPED_ROWS.format(source="$2"),
                                    segment=_quote(path.name),
                                    probe=_quote(segment_probe(path)), extra="")
    done = _write_or_list(con, query, staged, (store / MEASUREMENTS, prefix, staging),
                          path, result)
    return None if done is None else (*done, staged.sha256)


def _export_segments(con: duckdb.DuckDBPyConnection, todo: Sequence[Path], store: Path,
                     manifest: Manifest, result: ExportResult) -> None:
    """Decode the next batch (Python, a thread) while DuckDB writes this one.

    Two directories take turns, so the files DuckDB reads are never the ones being written.
    """
    staging = store / STAGING
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kzprobe-export") as pool:
        pending: tuple[list[Path], Future[list[Decoded | None]]] | None = None
        for index, batch in enumerate(batches(todo)):
            future = pool.submit(decode_batch, batch, staging / f"decoded-{index % 2}")
            if pending is not None:
                _export_batch(con, pending[0], pending[1].result(), store, manifest, result)
            pending = (batch, future)
        if pending is not None:
            _export_batch(con, pending[0], pending[1].result(), store, manifest, result)


def _export_batch(con: duckdb.DuckDBPyConnection, batch: list[Path],
                  decoded: list[Decoded | None], store: Path, manifest: Manifest,
                  result: ExportResult) -> None:
    """One scan for the batch's decoded segments; the careful path for any it failed."""
    ready = [(p, d) for p, d in zip(batch, decoded, strict=True) if d is not None and d.lines]
    scratch = store / STAGING / "batch"
    written = _copy_batch(con, ready, scratch) if ready else {}
    numbers = {path: seg for seg, (path, _) in enumerate(ready, start=1)}
    done: dict[Path, tuple[list[str], int, str] | None] = {}
    for path, plain in zip(batch, decoded, strict=True):
        seg = numbers.get(path, 0)
        if plain is not None and not plain.lines:
            done[path] = ([], 0, plain.sha256)
        elif plain is not None and written is not None and written.get(seg) == plain.lines:
            placed = _move(scratch / f"seg={seg}", store / MEASUREMENTS, f"m-{plain.sha256[:32]}")
            done[path] = (placed, plain.lines, plain.sha256)
        else:
            done[path] = _write_checked(con, path, store, result)
    shutil.rmtree(scratch, ignore_errors=True)
    _record(manifest, done, result)


def _copy_batch(con: duckdb.DuckDBPyConnection, ready: list[tuple[Path, Decoded]],
                scratch: Path) -> dict[int, int] | None:
    """COPY the batch into ``scratch/seg=N/...``; the rows written per segment (N from 1),
    None when DuckDB could not (each segment then goes the careful way)."""
    shutil.rmtree(scratch, ignore_errors=True)
    params = [str(scratch), [str(d.path) for _, d in ready], [p.name for p, _ in ready],
              [segment_probe(p) for p, _ in ready]]
    try:
        con.execute(COPY.format(query=BATCH_QUERY, by="seg, probe_cc, probe_asn, date",
                                prefix="part"), params)
        if not any(scratch.rglob("*.parquet")):
            return {}
        counted = con.execute("SELECT seg, count(*) FROM read_parquet($1, hive_partitioning "
                              "= true) GROUP BY seg", [f"{scratch}/**/*.parquet"]).fetchall()
    except duckdb.Error:
        return None
    return {int(seg): int(rows) for seg, rows in counted}


def _record(manifest: Manifest, done: dict[Path, tuple[list[str], int, str] | None],
            result: ExportResult) -> None:
    """Record the segments whose files are in place (files, rows, hash; None: not
    exported), one manifest write per probe."""
    by_probe: dict[str, dict[str, dict[str, Any]]] = {}
    for path, entry in done.items():
        if entry is not None:
            placed, written, sha256 = entry
            by_probe.setdefault(segment_probe(path), {})[segment_key(path)] = {
                "kind": "segment", "sha256": sha256, "rows": written, "files": placed}
    for probe, entries in by_probe.items():
        manifest.record(probe, entries)
        result.exported += len(entries)
        result.rows += sum(int(e["rows"]) for e in entries.values())


def _export_events(con: duckdb.DuckDBPyConnection, path: Path, store: Path,
                   manifest: Manifest, result: ExportResult) -> None:
    staging = store / STAGING
    staged, probe = _stage_events(path, staging / "events.ndjson", result.errors)
    if staged.failed:
        result.failed.append(path)
        return
    prefix = f"e-{probe}-{path.name.removesuffix('.ndjson')}-{_first_line_hash(path)}"
    key = f"{EVENTS}/{prefix}"  # not the path: a copied log is the same log
    known = manifest.get(probe, key)
    if known is not None and known.get("sha256") == staged.sha256:
        return
    done = _write_or_list(con, EVENT_ROWS.format(source="$2"), staged,
                          (store / EVENTS, prefix, staging), path, result)
    if done is None:
        return
    placed, written = done
    manifest.record(probe, {key: {"kind": "events", "sha256": staged.sha256,
                                  "rows": written, "files": placed}})
    result.event_files += 1
    result.event_rows += written


def _first_line_hash(path: Path) -> str:
    """Stable while the log grows: tells two probes' logs of the same day apart."""
    with open(path, "rb") as raw:
        return hashlib.sha256(raw.readline(1 << 20)).hexdigest()[:12]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _closed(files: Iterable[Path], result: ExportResult) -> Iterator[Path]:
    for path in files:
        if is_open(path.name):
            result.open_segments += 1
        else:
            yield path


@contextlib.contextmanager
def _opened(store: Path) -> Iterator[None]:
    """The store created and locked: one export at a time writes into it."""
    try:
        (store / STAGING).mkdir(parents=True, exist_ok=True)
        lock = open(store / LOCK, "wb")  # noqa: SIM115 (held until the export ends)
    except OSError as exc:
        raise ReportError(f"{store}: cannot create the store: {exc.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ReportError(f"{store}: another export is writing to it") from None
        try:
            yield
        finally:
            shutil.rmtree(store / STAGING, ignore_errors=True)


def export(paths: Sequence[Path], store: Path, *,
           memory_limit: str = MEMORY_LIMIT) -> ExportResult:
    """Export the closed segments and event logs under ``paths`` not yet in ``store``."""
    files = list_files(paths)
    result = ExportResult()
    with _opened(store), tempfile.TemporaryDirectory(prefix="kzprobe-export-") as tmp:
        manifest = Manifest(store)
        con = connect(Path(tmp), memory_limit=memory_limit)
        con.execute("SET preserve_insertion_order = true")  # BATCH_ROWS numbers the lines
        try:
            todo = [p for p in _closed(files, result)
                    if manifest.get(segment_probe(p), segment_key(p)) is None]
            result.skipped = len(files) - result.open_segments - len(todo)
            _export_segments(con, todo, store, manifest, result)
            for log in event_log.find_files(paths):
                _export_events(con, log, store, manifest, result)
        except OSError as exc:  # the store's disk: full, read-only, gone
            raise ReportError(f"{store}: cannot write: {exc.strerror or exc}") from None
        finally:
            con.close()
    return result
