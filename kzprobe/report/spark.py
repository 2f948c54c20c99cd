"""The report on Apache Spark (``kzprobe report --engine spark``), for a fleet's store.

Only the loading of table ``m`` is Spark's own: ``spark.read.parquet`` of a store's
measurements, or, for segments, the rows DuckDB scanned (with their read errors and open
segments) written to Parquet for Spark to read. Every query after that is the DuckDB
report's, translated by :mod:`kzprobe.report.dialect`. pyspark is imported here only, and
this module only by ``--engine spark``: ``kzprobe run`` never loads a JVM.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kzprobe.report import dialect, sql
from kzprobe.report.model import ReportError, Table, Window

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

LOCAL_MASTER = "local[2]"
LOCAL_SHUFFLE_PARTITIONS = 2  # Spark's default of 200 tasks per shuffle is for clusters
# Naive UTC throughout, as in the records: no time zone may shift a timestamp.
_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
}


def session(master: str | None = None, *, app: str = "kzprobe-report") -> SparkSession:
    """A SparkSession on ``master`` (default: ``local[2]``, bound to loopback)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ReportError("--engine spark: pyspark is not installed "
                          "(pip install 'kzprobe[spark]'; it needs Java 17)") from None
    master = master or LOCAL_MASTER
    builder = SparkSession.builder.master(master).appName(app)
    for key, value in _CONFIG.items():
        builder = builder.config(key, value)
    if master.startswith("local"):  # a local driver listens on loopback only
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # for the JVM about to start
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1")
        builder = builder.config("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # no Java, a master that does not answer: py4j's errors vary
        raise ReportError(f"--engine spark: cannot start Spark on {master}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None


class SparkEngine:
    """Runs the report's queries (DuckDB SQL, translated) on a SparkSession."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self._cached: list[DataFrame] = []

    def derive(self, name: str, text: str) -> None:
        """Keep a query's result as view ``name``, computed here, once. Not ``cache()``:
        a later query that names the view is matched against the cached plan, and a plan
        with CTEs never matched, so ``targets`` and ``starts`` were recomputed from ``m``
        by every query that read them. A local checkpoint cuts the lineage instead (its
        blocks go with the frame, which the session's cleaner drops once unreferenced)."""
        frame = self.spark.sql(dialect.to_spark(text)).localCheckpoint(eager=True)
        frame.createOrReplaceTempView(name)
        self._cached.append(frame)

    def query(self, name: str, text: str, params: Sequence[Any] = ()) -> Table:
        """One query's rows, as plain Python values (lists, not Rows)."""
        frame = self.spark.sql(dialect.to_spark(text, params))
        rows = tuple(tuple(_plain(v) for v in row) for row in frame.collect())
        return Table(name, tuple(frame.columns), rows)

    def load_store(self, store: Path, window: Window) -> int:
        """Table ``m`` from a store's measurements within ``window``; returns its rows."""
        frame = self.spark.read.option("mergeSchema", "true").parquet(
            str(store / "measurements"))
        return self._as_m(frame, window)

    def load_scanned(self, con: duckdb.DuckDBPyConnection, tmp: Path) -> int:
        """Table ``m`` from DuckDB's scan of segments, handed over as one Parquet file."""
        path = tmp / "m.parquet"
        con.execute(f"COPY (SELECT {', '.join(sql.M_COLUMNS)} FROM m) TO $1 "
                    "(FORMAT parquet, COMPRESSION zstd)", [str(path)])
        return self._as_m(self.spark.read.parquet(str(path)), Window())

    def _as_m(self, frame: DataFrame, window: Window) -> int:
        from pyspark.sql import functions as f

        frame = frame.select(*sql.M_COLUMNS)
        when = f.col("measurement_start_time")
        if window.since is not None:
            frame = frame.where(when >= f.lit(window.since))
        if window.until is not None:
            frame = frame.where(when < f.lit(window.until))
        frame = frame.cache()
        frame.createOrReplaceTempView("m")
        self._cached.append(frame)
        return int(frame.count())

    def close(self) -> None:
        """Drop the cached views (the session stays for the next report)."""
        for frame in self._cached:
            frame.unpersist()
        self._cached.clear()


def _plain(value: Any) -> Any:
    """Spark's values as DuckDB's: arrays as lists, everything else as it is."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
