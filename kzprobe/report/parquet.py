"""``--export-parquet DIR``: the scanned measurements as Parquet, one directory per day.

The hand-off to bigger engines: Hive-style partitions (``DIR/day=YYYY-MM-DD/*.parquet``)
that DuckDB, Spark, ClickHouse and BigQuery read as they are. The columns are table
``m`` of the scan (docs/report.md lists them); ``day`` lives in the directory names.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from kzprobe.report.model import ReportError

EXPORT = """
COPY (SELECT measurement_start_time::DATE AS day, * EXCLUDE (bad_file) FROM m
      ORDER BY measurement_start_time, input, probe_asn)
TO $1 (FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)
"""


def check_target(directory: Path) -> None:
    """Refuse a directory that has files in it: an export never mixes with another."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ReportError(f"{directory}: --export-parquet needs a new or empty directory")


def export(con: duckdb.DuckDBPyConnection, directory: Path) -> int:
    """Write table ``m`` under ``directory``; returns the number of day partitions."""
    check_target(directory)
    directory.mkdir(parents=True, exist_ok=True)
    con.execute(EXPORT, [str(directory)])
    return sum(1 for p in directory.iterdir() if p.name.startswith("day="))
