"""``kzprobe report``: what is blocked, since when, how, on which network, what changed.

DuckDB scans the NDJSON segments once (in parallel, gzip and zstd included) into a
small table of the fields a report needs; every table of the report is a query over
it. See docs/report.md for the state model, the tables and the Parquet schema.
"""

from __future__ import annotations

from kzprobe.report.build import build_report
from kzprobe.report.model import ReadError, ReadStats, Report, ReportError, Table, Window

__all__ = ["ReadError", "ReadStats", "Report", "ReportError", "Table", "Window", "build_report"]
