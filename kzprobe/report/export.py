"""``kzprobe export``: closed segments and event logs into a hive-partitioned Parquet store.

The store is the hand-off from probes to bigger engines (DuckDB, Spark, ClickHouse,
BigQuery): ``DIR/measurements/`` and ``DIR/events/``, each under
``probe_cc=/probe_asn=/date=``, columns in docs/parquet-schema.md. It is built to be run
again and again (from cron, after each rotation) and to be merged by copying directories:

* A segment is exported once. ``DIR/_manifest/<probe id>.json`` records each one by its
  plain name (``....ndjson``, the same before and after compression) and the SHA-256 of its
  decompressed content; the manifest is replaced atomically, after the segment's files are
  in place, so a crash in between only means the segment is exported again.
* A segment's Parquet files are named after that hash and staged in ``DIR/.staging``
  before they are renamed into their partitions: exporting it again overwrites them (and
  removes any leftover of the same prefix), never duplicates its rows.
* Event logs grow during their day: one is exported again when its hash changes, into
  files named after the log's probe, day and first line, which a new version overwrites.
* File names carry a hash of the data, the manifest the probe id: two probes' stores
  copied into one directory do not clash.

Open segments (``.part``) are left for a later run. Bad lines are listed and skipped; a
segment that cannot be read is listed and not recorded, so a later run tries it again.
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
from kzprobe.report.model import ReportError
from kzprobe.report.scan import ErrorLog, connect, list_files, problem
from kzprobe.report.sql import MECHANISM, STATE
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
SCHEMA_VERSION = 1  # docs/parquet-schema.md; bump on any change of a column's meaning or type
_RECORD = """STRUCT(input JSON, measurement_start_time VARCHAR, probe_asn VARCHAR,
    probe_cc VARCHAR, probe_network_name VARCHAR, resolver_ip VARCHAR, test_name VARCHAR,
    test_version VARCHAR, software_name VARCHAR, software_version VARCHAR,
    category_code VARCHAR, test_runtime DOUBLE, x_measurement_uid VARCHAR,
    x_network_state JSON, x_outage JSON,
    annotations STRUCT(kzprobe_sweep VARCHAR, kzprobe_group VARCHAR,
        kzprobe_probe_id VARCHAR, category_code VARCHAR),
    test_keys STRUCT(blocking JSON, accessible BOOLEAN, reachable BOOLEAN, failure VARCHAR,
        interference VARCHAR[], blockpage VARCHAR, tls_mitm_issuer VARCHAR,
        x_tls_mitm_known VARCHAR, sni_blocking_confirmed BOOLEAN,
        dns_experiment_failure VARCHAR, http_experiment_failure VARCHAR,
        x_attempts INTEGER, x_attempts_agreeing INTEGER,
        tcp_connect STRUCT(status STRUCT(failure VARCHAR))[],
        tls_handshakes STRUCT(failure VARCHAR)[],
        x_timings STRUCT(dns DOUBLE, connect DOUBLE, tls DOUBLE, ttfb DOUBLE,
            body_bytes_per_s DOUBLE)))"""

# The staged rows are ``{"line": N, "r": record}`` of records that passed scan.problem;
# state and mechanism are the report's own definitions (kzprobe/report/sql.py).
MEASUREMENT_ROWS = f"""
WITH src AS (
    SELECT line, r FROM read_json({{source}}, columns = {{{{'line': 'BIGINT', 'r': '{_RECORD}'}}}},
        format = 'newline_delimited', ignore_errors = true)
    WHERE r IS NOT NULL
), t AS (
    SELECT line, r, r.test_keys AS tk,
        try_strptime(r.measurement_start_time, '%Y-%m-%d %H:%M:%S') AS ts,
        CASE WHEN json_type(r.input) = 'VARCHAR' THEN r.input ->> '$' END AS url,
        list_sort(coalesce(r.test_keys.interference, [])) AS interference,
        CASE WHEN json_type(r.test_keys.blocking) = 'VARCHAR'
             THEN r.test_keys.blocking ->> '$' END AS ooni_blocking,
        CASE WHEN json_type(r.test_keys.blocking) = 'VARCHAR' THEN true
             WHEN r.test_keys.blocking::VARCHAR = 'false' THEN false END AS ooni_blocked,
        list_filter(r.test_keys.tcp_connect, lambda c: c.status.failure IS NOT NULL)[1]
            .status.failure AS tcp_connect_failure,
        list_filter(r.test_keys.tls_handshakes, lambda h: h.failure IS NOT NULL)[1].failure
            AS tls_handshake_failure,
        len(r.test_keys.tcp_connect) > 0 AND len(list_filter(r.test_keys.tcp_connect,
            lambda c: c.status.failure IS NULL)) = 0 AS connects_failed,
        len(r.test_keys.tls_handshakes) > 0 AND len(list_filter(r.test_keys.tls_handshakes,
            lambda h: h.failure IS NULL)) = 0 AS handshakes_failed
    FROM src
)
SELECT {SCHEMA_VERSION}::INTEGER AS schema_version, ts AS measurement_start_time,
    url AS input, r.annotations.kzprobe_group AS "group",
    coalesce(r.category_code, r.annotations.category_code) AS category_code,
    r.probe_network_name, r.resolver_ip, r.test_name, r.test_version, r.software_name,
    r.software_version, coalesce(r.annotations.kzprobe_probe_id, {{probe}}) AS probe_id,
    r.x_measurement_uid,
    r.annotations.kzprobe_sweep AS sweep_id,
    {STATE} AS state, {MECHANISM} AS mechanism,
    ooni_blocking, ooni_blocked, tk.accessible, tk.reachable, interference, tk.blockpage,
    tk.tls_mitm_issuer, tk.x_tls_mitm_known, tk.sni_blocking_confirmed, tk.x_attempts,
    tk.x_attempts_agreeing,
    CASE WHEN tk.dns_experiment_failure IS NOT NULL THEN 'dns'
         WHEN connects_failed THEN 'tcp_connect'
         WHEN handshakes_failed THEN 'tls_handshake'
         WHEN tk.http_experiment_failure IS NOT NULL THEN 'http'
         WHEN tk.failure IS NOT NULL THEN 'endpoint' END AS failed_step,
    tk.failure, tk.dns_experiment_failure, tcp_connect_failure, tls_handshake_failure,
    tk.http_experiment_failure,
    r.test_runtime, tk.x_timings.dns AS timing_dns, tk.x_timings.connect AS timing_connect,
    tk.x_timings.tls AS timing_tls, tk.x_timings.ttfb AS timing_ttfb,
    tk.x_timings.body_bytes_per_s AS body_bytes_per_s,
    CASE WHEN json_type(r.x_network_state) = 'VARCHAR' THEN r.x_network_state ->> '$' END
        AS x_network_state,
    coalesce(json_type(r.x_outage) = 'BOOLEAN' AND r.x_outage::VARCHAR = 'true', false)
        AS x_outage,
    {{segment}} AS segment, line,
    coalesce(r.probe_cc, 'ZZ') AS probe_cc, coalesce(r.probe_asn, 'AS0') AS probe_asn,
    ts::DATE AS date
FROM t WHERE ts IS NOT NULL AND url IS NOT NULL AND url <> ''
ORDER BY ts, line
"""

_EVENT_COLUMNS = """{{'event_time': 'TIMESTAMP', 'kind': 'VARCHAR', 'scope': 'VARCHAR',
    'event_id': 'VARCHAR', 'seq': 'BIGINT', 'confirmed_at': 'TIMESTAMP', 'input': 'VARCHAR',
    'group': 'VARCHAR', 'probe_cc': 'VARCHAR', 'probe_asn': 'VARCHAR', 'probe_id': 'VARCHAR',
    'category_code': 'VARCHAR', 'from_state': 'VARCHAR', 'from_mechanism': 'VARCHAR',
    'to_state': 'VARCHAR', 'to_mechanism': 'VARCHAR', 'sni_blocking_confirmed': 'BOOLEAN',
    'blockpage': 'VARCHAR', 'evidence': 'VARCHAR[]', 'summary': 'VARCHAR',
    'source_file': 'VARCHAR'}}"""

EVENT_ROWS = f"""
SELECT {SCHEMA_VERSION}::INTEGER AS schema_version, * EXCLUDE (probe_cc, probe_asn),
    coalesce(probe_cc, 'ZZ') AS probe_cc, coalesce(probe_asn, 'AS0') AS probe_asn,
    event_time::DATE AS date
FROM read_json({{source}}, columns = {_EVENT_COLUMNS},
    format = 'newline_delimited')
ORDER BY event_time, seq, event_id
"""
_COPY = "COPY ({query}) TO $1 (FORMAT parquet, PARTITION_BY (probe_cc, probe_asn, date), " \
        "COMPRESSION zstd, FILENAME_PATTERN '{prefix}_{{i}}', OVERWRITE_OR_IGNORE true)"


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

    def record(self, probe: str, key: str, entry: dict[str, Any]) -> None:
        """Add an entry and replace that probe's manifest atomically."""
        self.entries.setdefault(probe, {})[key] = entry
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
    """Rename the staged partition files into ``table``; drop stale ones of ``prefix``."""
    placed: list[str] = []
    for file in sorted(staging.rglob("*.parquet")):
        relative = file.relative_to(staging)
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


def _write(con: duckdb.DuckDBPyConnection, query: str, staged: Staged, table: Path,
           prefix: str, staging: Path) -> tuple[list[str], int]:
    """COPY the staged rows into a scratch tree, then move them into the store.

    Returns the files placed and the rows written; raises :class:`duckdb.Error` (before
    anything is placed) when DuckDB cannot write them.
    """
    scratch = staging / prefix
    shutil.rmtree(scratch, ignore_errors=True)
    written = 0
    if staged.rows:
        copied = con.execute(_COPY.format(query=query, prefix=prefix),
                             [str(scratch), str(staged.path)]).fetchone()
        written = int(copied[0]) if copied else 0
    placed = _place(scratch, table, prefix) if scratch.exists() else []
    shutil.rmtree(scratch, ignore_errors=True)
    return placed, written


def _write_or_list(con: duckdb.DuckDBPyConnection, query: str, staged: Staged,
                   where: tuple[Path, str, Path], source: Path,
                   result: ExportResult) -> tuple[list[str], int] | None:
    """:func:`_write`, a DuckDB failure listed against ``source`` (None: not exported)."""
    table, prefix, staging = where
    try:
        placed, written = _write(con, query, staged, table, prefix, staging)
    except duckdb.Error as exc:
        result.errors(source, 0, f"unreadable by DuckDB: {str(exc).splitlines()[0]}")
        result.failed.append(source)
        return None
    if written != staged.rows and table.name == MEASUREMENTS:
        _list_unusable(source, result.errors)
    elif written != staged.rows:
        result.errors(source, 0, f"{staged.rows - written} of {staged.rows} events "
                                 f"not written (DuckDB could not read them)")
    return placed, written


def _stage_alone(path: Path, out: Path) -> tuple[Staged, ErrorLog]:
    """:func:`_stage_segment` with its own problem log, for the staging thread."""
    errors = ErrorLog()
    return _stage_segment(path, out, errors), errors


def _merge(errors: ErrorLog, into: ErrorLog) -> None:
    for error in errors.kept:
        into(error.file, error.line, error.reason)
    into.count += errors.count - len(errors.kept)


def _export_segments(con: duckdb.DuckDBPyConnection, todo: Sequence[Path], store: Path,
                     manifest: Manifest, result: ExportResult) -> None:
    """Stage the next segment (Python) while DuckDB writes this one: the two overlap.

    Two staging files take turns, so the one DuckDB reads is never the one being written.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kzprobe-export") as pool:
        pending: tuple[Path, Future[tuple[Staged, ErrorLog]]] | None = None
        for index, path in enumerate(todo):
            out = store / STAGING / f"segment-{index % 2}.ndjson"
            future = pool.submit(_stage_alone, path, out)
            if pending is not None:
                _export_segment(con, pending[0], *pending[1].result(), store, manifest, result)
            pending = (path, future)
        if pending is not None:
            _export_segment(con, pending[0], *pending[1].result(), store, manifest, result)


def _export_segment(con: duckdb.DuckDBPyConnection, path: Path, staged: Staged,
                    errors: ErrorLog, store: Path, manifest: Manifest,
                    result: ExportResult) -> None:
    staging = store / STAGING
    _merge(errors, result.errors)
    if staged.failed:
        result.failed.append(path)
        return
    prefix = f"m-{staged.sha256[:32]}"
    query = MEASUREMENT_ROWS.format(source="$2", segment=_quote(path.name),
                                    probe=_quote(segment_probe(path)))
    done = _write_or_list(con, query, staged, (store / MEASUREMENTS, prefix, staging),
                          path, result)
    if done is None:
        return
    placed, written = done
    manifest.record(segment_probe(path), segment_key(path),
                    {"kind": "segment", "sha256": staged.sha256, "rows": written,
                     "files": placed})
    result.exported += 1
    result.rows += written


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
    manifest.record(probe, key, {"kind": "events", "sha256": staged.sha256,
                                 "rows": written, "files": placed})
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
