"""``kzprobe export``: the Parquet store, read back with DuckDB as another engine would."""

from __future__ import annotations

import fcntl
import gzip
import shutil
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from kzprobe.cli import main
from kzprobe.report import export as export_module
from kzprobe.report.export import SCHEMA_VERSION, export
from tests.report.builders import lines, network_event, target_event, web, write
from tests.report.conftest import EVENTS, NEWS, TWITTER, outage_events

VPS1 = "kz-20240301T000000Z-vps1-100-000001.ndjson"


def _record(url: str, when: str, *, probe: str = "vps1", asn: str = "AS9198",
            line_uid: int = 0, **kw: Any) -> dict[str, Any]:
    """A record carrying what a probe stamps: probe id, group and measurement uid."""
    record = web(url, when, asn=asn, **kw)
    record["annotations"] |= {"kzprobe_probe_id": probe, "kzprobe_group": "watch"}
    record["x_measurement_uid"] = f"{probe}{line_uid:030d}"
    return record


def _segment(directory: Path, name: str, day: str, *, probe: str = "vps1",
             asn: str = "AS9198", count: int = 3) -> Path:
    records = [_record(TWITTER, f"{day} {h:02d}:00:00", probe=probe, asn=asn, line_uid=h,
                       blocking="http-failure", accessible=False,
                       interference=["tls.timeout"]) for h in range(count)]
    return write(directory / name, lines(records))


def _rows(store: Path, query: str = "SELECT count(*) FROM m") -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW m AS SELECT * FROM read_parquet("
                f"'{store}/measurements/**/*.parquet', hive_partitioning = true)")
    return con.execute(query).fetchall()


def _events(store: Path, query: str = "SELECT count(*) FROM e") -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet("
                f"'{store}/events/**/*.parquet', hive_partitioning = true)")
    return con.execute(query).fetchall()


def _files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*.parquet"))


def test_export_writes_hive_partitions_with_evidence_location(fleet: list[Path],
                                                             tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = export(fleet, store)
    # probe a: 10 (gz) + 6 (zst), its .part waits; probe b: 4 usable of 7 lines
    assert (result.exported, result.rows, result.open_segments) == (3, 20, 1)
    assert [(e.line, e.reason.split(":")[0]) for e in result.errors.sorted()] == [
        (3, "invalid JSON"), (5, "not a JSON object"),
        (7, "no 'measurement_start_time' as YYYY-MM-DD HH")]
    assert _rows(store, "SELECT probe_cc, probe_asn, date::VARCHAR, count(*) FROM m "
                        "GROUP BY ALL ORDER BY ALL") == [
        ("KZ", "AS206026", "2024-03-01", 4), ("KZ", "AS9198", "2024-03-01", 10),
        ("KZ", "AS9198", "2024-03-02", 6)]
    # the evidence location points at the line in the segment
    assert _rows(store, "SELECT segment, line, input, state, mechanism, schema_version FROM m "
                        "WHERE probe_asn = 'AS206026' ORDER BY line") == [
        ("kz-20240301T000000Z-vps2-200-000001.ndjson", 1, TWITTER, "blocked", "tls.mitm", 1),
        ("kz-20240301T000000Z-vps2-200-000001.ndjson", 2, TWITTER, "blocked", "tls.mitm", 1),
        ("kz-20240301T000000Z-vps2-200-000001.ndjson", 4, NEWS, "accessible", None, 1),
        ("kz-20240301T000000Z-vps2-200-000001.ndjson", 8, TWITTER, "blocked", "tls.mitm", 1)]
    assert not (store / ".staging").exists()
    # records without annotations.kzprobe_probe_id take the probe id of their segment's name
    assert _rows(store, "SELECT DISTINCT probe_id FROM m ORDER BY 1") == [("vps1",), ("vps2",)]


def test_probe_keys_and_failure_steps(tmp_path: Path) -> None:
    record = _record(TWITTER, "2024-03-01 00:00:00", line_uid=7, interference=["tls.reset"])
    record["test_keys"] |= {
        "tcp_connect": [{"ip": "198.18.0.1", "port": 443,
                         "status": {"success": True, "failure": None}}],
        "tls_handshakes": [{"failure": "connection_reset"}],
        "http_experiment_failure": "connection_reset",
        "x_timings": {"dns": 0.01, "connect": 0.02, "tls": None, "ttfb": None}}
    record |= {"x_network_state": "online"}
    write(tmp_path / "d" / VPS1, lines([record]))
    export([tmp_path / "d"], tmp_path / "store")
    assert _rows(tmp_path / "store", "SELECT probe_id, \"group\", x_measurement_uid, "
                 "failed_step, tls_handshake_failure, tcp_connect_failure, timing_connect, "
                 "x_network_state, x_outage FROM m") == [
        ("vps1", "watch", "vps1" + "0" * 29 + "7", "tls_handshake", "connection_reset", None,
         0.02, "online", False)]


def test_odd_fields_are_null_and_records_without_input_are_listed(tmp_path: Path) -> None:
    odd = [web(f"https://{n}.kz/", f"2024-03-01 0{n}:00:00") for n in range(4)]
    odd[1]["test_keys"]["x_timings"] = "fast"
    odd[2]["test_runtime"] = "slow"
    odd[3]["annotations"] = "not a map"
    empty = {"input": "", "measurement_start_time": "2024-03-01 05:00:00"}  # the SQL drops it
    write(tmp_path / "d" / VPS1, lines([*odd, empty]))
    result = export([tmp_path / "d"], tmp_path / "store")
    assert result.rows == 4
    assert [(e.line, e.reason) for e in result.errors.sorted()] == [(5, "no 'input' string")]
    assert _rows(tmp_path / "store", "SELECT line, test_runtime, probe_id FROM m "
                                     "ORDER BY line") == [
        (1, 0.5, "vps1"), (2, 0.5, "vps1"), (3, None, "vps1"), (4, 0.5, "vps1")]


def test_reexport_skips_and_a_new_segment_is_added(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    _segment(data, VPS1, "2024-03-01")
    assert export([data], store).exported == 1
    before = _files(store)
    again = export([data], store)
    assert (again.exported, again.skipped, again.rows) == (0, 1, 0)
    assert _files(store) == before
    _segment(data, "kz-20240302T000000Z-vps1-100-000002.ndjson", "2024-03-02", count=2)
    more = export([data], store)
    assert (more.exported, more.skipped, more.rows) == (1, 1, 2)
    assert _rows(store) == [(5,)]


def test_a_segment_compressed_after_export_is_not_exported_again(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    plain = _segment(data, VPS1, "2024-03-01")
    export([data], store)
    write(data / (VPS1 + ".gz"), plain.read_bytes())
    plain.unlink()
    assert export([data], store).skipped == 1
    assert _rows(store) == [(3,)]


def test_a_crash_before_the_manifest_leaves_no_duplicates(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    _segment(data, VPS1, "2024-03-01")

    def crash(*_: object) -> None:
        raise KeyboardInterrupt  # the process dies after the rename, before the manifest

    with monkeypatch.context() as patch:
        patch.setattr(export_module.Manifest, "record", crash)
        with pytest.raises(KeyboardInterrupt):
            export([data], store)
    assert _rows(store) == [(3,)]  # the files are in place, the manifest is not
    assert not (store / "_manifest" / "vps1.json").exists()
    result = export([data], store)
    assert (result.exported, result.rows) == (1, 3)
    assert _rows(store) == [(3,)]
    assert export([data], store).skipped == 1


def test_two_probes_merge_by_copying(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _segment(a, VPS1, "2024-03-01", count=3)
    _segment(a, "kz-20240302T000000Z-vps1-100-000002.ndjson", "2024-03-02", count=2)
    _segment(b, "kz-20240301T000000Z-vps2-200-000001.ndjson", "2024-03-01", probe="vps2",
             asn="AS206026", count=4)
    write(a / EVENTS, lines([target_event("blocked", TWITTER, "2024-03-01T00:00:00Z",
                                          to=("blocked", ["tls.timeout"]))]))
    write(b / EVENTS, lines([target_event("blocked", TWITTER, "2024-03-01T00:00:00Z",
                                          to=("blocked", ["tls.timeout"]), asn="AS206026",
                                          probe_id="vps2")]))
    export([a], tmp_path / "store-a")
    export([b], tmp_path / "store-b")
    merged = tmp_path / "merged"
    for store in ("store-a", "store-b"):
        shutil.copytree(tmp_path / store, merged, dirs_exist_ok=True)
    assert len(_files(merged)) == len(_files(tmp_path / "store-a")) + len(
        _files(tmp_path / "store-b"))
    assert _rows(merged, "SELECT probe_id, probe_asn, date::VARCHAR, count(*) FROM m "
                         "GROUP BY ALL ORDER BY ALL") == [
        ("vps1", "AS9198", "2024-03-01", 3), ("vps1", "AS9198", "2024-03-02", 2),
        ("vps2", "AS206026", "2024-03-01", 4)]
    assert _events(merged, "SELECT probe_id, probe_asn FROM e ORDER BY 1") == [
        ("vps1", "AS9198"), ("vps2", "AS206026")]
    assert sorted(p.name for p in (merged / "_manifest").iterdir()) == ["vps1.json", "vps2.json"]
    again = export([a, b], merged)  # the merged store knows both probes' segments
    assert (again.exported, again.skipped, again.event_files) == (0, 3, 0)


def test_events_are_exported_and_a_grown_log_replaces_its_files(probe: Path,
                                                               tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = export([probe], store)
    assert (result.event_files, result.event_rows) == (1, 6)  # the torn 7th line waits
    assert _events(store, "SELECT kind, scope, probe_asn, date::VARCHAR, schema_version "
                          "FROM e ORDER BY event_time") == [
        ("blocked", "target", "AS9198", "2026-12-07", SCHEMA_VERSION),
        ("outage", "network", "AS9198", "2026-12-07", SCHEMA_VERSION),
        ("recovered", "network", "AS9198", "2026-12-07", SCHEMA_VERSION),
        ("unblocked", "target", "AS9198", "2026-12-07", SCHEMA_VERSION),
        ("mechanism_changed", "target", "AS9198", "2026-12-07", SCHEMA_VERSION),
        ("degraded", "network", "AS9198", "2026-12-07", SCHEMA_VERSION)]
    assert export([probe], store).event_files == 0  # unchanged: skipped
    write(probe / EVENTS, lines([*outage_events(), network_event(
        "outage", "2026-12-07T19:00:00Z", frm="degraded", to="full_outage", seq=7)]))
    assert export([probe], store).event_files == 1
    assert _events(store) == [(7,)]


def test_an_unreadable_segment_is_listed_and_the_rest_exported(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    _segment(data, VPS1, "2024-03-01")
    whole = gzip.compress(lines([_record(TWITTER, "2024-03-02 00:00:00")]) * 50)
    bad = data / "kz-20240302T000000Z-vps1-100-000002.ndjson.gz"
    bad.write_bytes(whole[: len(whole) // 2])
    assert main(["export", str(data), "--to", str(store)]) == 2
    err = capsys.readouterr()
    assert f"kzprobe: error: {bad}: not exported" in err.err
    assert "Traceback" not in err.err
    assert "exported 1 segment (3 measurements)" in err.out
    assert _rows(store) == [(3,)]
    manifest = orjson.loads((store / "_manifest" / "vps1.json").read_bytes())
    assert list(manifest["files"]) == [VPS1]  # the broken one is tried again next time


def test_a_missing_path_is_one_line_and_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), "--to", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kzprobe: error:")
    assert not (tmp_path / "store").exists()


def test_open_segments_only_exports_nothing(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write(data / (VPS1 + ".part"), lines([_record(TWITTER, "2024-03-01 00:00:00")]))
    assert main(["export", str(data), "--to", str(tmp_path / "store")]) == 0
    assert "exported 0 segments (0 measurements), skipped 0 already exported and 1 open" \
        in capsys.readouterr().out
    assert _files(tmp_path / "store") == []


def test_a_second_export_into_a_locked_store_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    _segment(data, VPS1, "2024-03-01")
    store.mkdir()
    with open(store / ".lock", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["export", str(data), "--to", str(store)]) == 2
    assert "another export is writing to it" in capsys.readouterr().err
    assert main(["export", str(data), "--to", str(store)]) == 0
    assert _rows(store) == [(3,)]
