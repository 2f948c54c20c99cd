"""The SQL of ``kzprobe export``, and its fast path: segments decompressed once, one scan.

Validating each line in Python (and wrapping it with its line number) cost four times
what DuckDB's own scan does (benchmarks/bench_export.py). On the fast path Python only
streams each segment: ISA-L decompresses it, and one pass hashes the decompressed bytes,
counts its lines and writes them to a plain file. DuckDB then reads a batch of such files
in one parallel scan, numbers each file's rows in the order it read them
(``row_number() OVER ()``, insertion order kept) and writes every segment's partitions
apart (``seg``, a partition only in the scratch tree). The row numbers are the line numbers
only when every line of a file became one usable row: the caller checks that (rows written
equal lines counted) and sends a segment that fails it (a corrupt or blank line, a record
without input or time, a torn end) the careful way, each line validated in Python.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kzprobe.report.sql import MECHANISM, STATE
from kzprobe.storage import codecs
from kzprobe.storage.segments import open_segment

_CHUNK = 1 << 20  # decoded bytes per read
BATCH_BYTES = 32 << 20  # segment bytes on disk per scan: bounds the decoded files and memory
BATCH_FILES = 64

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

# ``rows``: line and r, the record (BATCH_ROWS: decoded segments as they are, also their
# ``seg``; WRAPPED_ROWS: the ``{"line": N, "r": record}`` the careful path staged);
# ``segment`` and ``probe`` are SQL. State and mechanism are the report's own definitions
# (kzprobe/report/sql.py). No ORDER BY: a partitioned COPY writes in parallel and would not
# keep it (sorting cost a sixth of the export); readers sort.
WRAPPED_ROWS = f"""SELECT line, r FROM read_json({{source}},
        columns = {{{{'line': 'BIGINT', 'r': '{_RECORD}'}}}}, format = 'newline_delimited',
        ignore_errors = true)"""
MEASUREMENT_ROWS = f"""
WITH src AS (
    SELECT * FROM ({{rows}}) WHERE r IS NOT NULL
), t AS (
    SELECT *, r.test_keys AS tk,
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
    ts::DATE AS date{{extra}}
FROM t WHERE ts IS NOT NULL AND url IS NOT NULL AND url <> ''
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
COPY = "COPY ({query}) TO $1 (FORMAT parquet, PARTITION_BY ({by}), " \
        "COMPRESSION zstd, FILENAME_PATTERN '{prefix}_{{i}}', OVERWRITE_OR_IGNORE true)"

# $2: the decoded files, $3 their segments' names, $4 their probe ids. ``records = false``
# reads a line as one value of the record's type: a field of the wrong type is null, not
# the row. Row numbers are taken in scan order, then made relative to each file.
BATCH_ROWS = f"""SELECT n - min(n) OVER (PARTITION BY filename) + 1 AS line, r, seg FROM (
    SELECT row_number() OVER () AS n, json AS r, filename,
        list_position($2, filename) AS seg
    FROM read_json($2, records = false, columns = {{'json': '{_RECORD}'}},
        format = 'newline_delimited', ignore_errors = true, filename = true))"""
BATCH_QUERY = MEASUREMENT_ROWS.format(rows=BATCH_ROWS, segment="$3[seg]", probe="$4[seg]",
                                      extra=", seg")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A segment as plain NDJSON for DuckDB: the file, its SHA-256 and its number of lines."""

    path: Path
    sha256: str
    lines: int


def batches(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """``paths`` in order, in runs of at most BATCH_BYTES (or one bigger segment)."""
    batch: list[Path] = []
    size = 0
    for path in paths:
        try:
            length = path.stat().st_size
        except OSError:
            length = 0  # gone: decode finds out, the careful path reports it
        if batch and (size + length > BATCH_BYTES or len(batch) >= BATCH_FILES):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


def decode_batch(paths: Sequence[Path], directory: Path) -> list[Decoded | None]:
    """:func:`decode` each of ``paths`` into ``directory`` (emptied first)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    return [decode(path, directory / f"{index}.ndjson") for index, path in enumerate(paths)]


def decode(path: Path, out: Path) -> Decoded | None:
    """``path`` decompressed into ``out`` (a plain segment is read where it is), hashed
    and counted; None when it cannot be read whole or does not end with a newline.

    The hash covers the same bytes as the careful path's (every line and its newline).
    """
    digest = hashlib.sha256()
    lines = 0
    last = b"\n"
    plain = codecs.method_of(path.name) is None
    try:
        sink_path = None if plain else out
        with contextlib.closing(open_segment(path)) as stream, _sink(sink_path) as sink:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                if sink is not None:
                    sink.write(chunk)
    except Exception:  # corrupt, truncated, gone, disk full: the careful path says which
        with contextlib.suppress(OSError):
            os.unlink(out)
        return None
    if last != b"\n":
        return None
    return Decoded(path if plain else out, digest.hexdigest(), lines)


def _sink(out: Path | None) -> contextlib.AbstractContextManager[BinaryIO | None]:
    return open(out, "wb") if out is not None else contextlib.nullcontext()
