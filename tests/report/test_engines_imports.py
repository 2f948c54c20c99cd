"""Spark and SQLGlot load only for ``--engine spark``: the daemon and a DuckDB report never
start a JVM or parse SQL twice."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_a_duckdb_report_do_not_import_spark() -> None:
    code = ("import sys, kzprobe.cli, kzprobe.report.command, kzprobe.report.build; "
            "print(sorted(m for m in ('pyspark', 'py4j', 'sqlglot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
