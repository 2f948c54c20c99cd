"""``--export-parquet``: the measurements flattened, one directory per day, read back."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from kzprobe.report import ReportError
from kzprobe.report.command import ReportRequest, run

# docs/report.md documents this schema; a change here is a change for every reader.
SCHEMA = [
    ("measurement_start_time", "TIMESTAMP"), ("input", "VARCHAR"), ("probe_asn", "VARCHAR"),
    ("probe_cc", "VARCHAR"), ("probe_network_name", "VARCHAR"), ("resolver_ip", "VARCHAR"),
    ("test_name", "VARCHAR"), ("test_version", "VARCHAR"), ("software_name", "VARCHAR"),
    ("software_version", "VARCHAR"), ("category_code", "VARCHAR"), ("test_runtime", "DOUBLE"),
    ("sweep_id", "VARCHAR"), ("state", "VARCHAR"), ("mechanism", "VARCHAR"),
    ("ooni_blocking", "VARCHAR"), ("ooni_blocked", "BOOLEAN"), ("accessible", "BOOLEAN"),
    ("reachable", "BOOLEAN"), ("failure", "VARCHAR"), ("interference", "VARCHAR[]"),
    ("blockpage", "VARCHAR"), ("tls_mitm_issuer", "VARCHAR"), ("x_tls_mitm_known", "VARCHAR"),
    ("sni_blocking_confirmed", "BOOLEAN"), ("dns_experiment_failure", "VARCHAR"),
    ("http_experiment_failure", "VARCHAR"), ("x_attempts", "INTEGER"),
    ("x_attempts_agreeing", "INTEGER"), ("x_network_state", "VARCHAR"), ("x_outage", "BOOLEAN"),
    ("probe_id", "VARCHAR"), ("day", "DATE"),
]


def test_export_partitions_by_day_and_reads_back(fleet: list[Path], tmp_path: Path) -> None:
    """Every usable record lands in its day's directory with the documented columns."""
    lake = tmp_path / "lake"
    run(ReportRequest(paths=tuple(fleet), format="json", export_parquet=lake))
    assert sorted(p.name for p in lake.iterdir()) == [
        "day=2024-03-01", "day=2024-03-02", "day=2024-03-03"]
    con = duckdb.connect()
    source = f"read_parquet('{lake}/*/*.parquet', hive_partitioning = true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    assert [(row[0], row[1]) for row in described] == SCHEMA
    per_day = con.execute(f"SELECT day::VARCHAR, count(*) FROM {source} GROUP BY day ORDER BY day")
    assert per_day.fetchall() == [("2024-03-01", 14), ("2024-03-02", 6), ("2024-03-03", 2)]
    row = con.execute(f"""SELECT state, mechanism, interference, tls_mitm_issuer, probe_asn
        FROM {source} WHERE measurement_start_time = '2024-03-01 03:30:00'""").fetchall()
    assert row == [("blocked", "tls.mitm", ["tls.mitm"], "Security Certificate", "AS206026")]


def test_export_refuses_a_directory_in_use(fleet: list[Path], tmp_path: Path) -> None:
    """An export never mixes with files already there."""
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "old.parquet").write_bytes(b"")
    with pytest.raises(ReportError, match="needs a new or empty directory"):
        run(ReportRequest(paths=tuple(fleet), export_parquet=tmp_path / "lake"))
