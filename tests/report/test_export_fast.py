"""``kzprobe export``'s fast path (one DuckDB scan of decoded segments) against its careful
path (each line validated in Python): the same rows, line numbers, hashes and file names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from kzprobe.report import export as export_module
from kzprobe.report import export_scan
from kzprobe.report.export import export
from tests.report.builders import lines, web, write
from tests.report.conftest import NEWS, TWITTER, outage_records

NAME = "kz-20240301T000000Z-vps1-100-{:06d}.ndjson{}"


def _rows(store: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    return con.execute(f"SELECT * FROM read_parquet('{store}/measurements/**/*.parquet', "
                       "hive_partitioning = true) ORDER BY segment, line").fetchall()


def _manifest(store: Path) -> dict[str, Any]:
    return dict(orjson.loads((store / "_manifest" / "vps1.json").read_bytes())["files"])


def _careful_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records each segment that went the careful way."""
    calls: list[Path] = []
    careful = export_module._write_checked

    def counted(con: duckdb.DuckDBPyConnection, path: Path, *rest: Any) -> Any:
        calls.append(path)
        return careful(con, path, *rest)

    monkeypatch.setattr(export_module, "_write_checked", counted)
    return calls


def _varied(day: int) -> list[dict[str, Any]]:
    records = [*outage_records(), web(NEWS, f"2024-03-0{day} 01:00:00", asn="AS206026")]
    records[1]["test_keys"] |= {
        "tcp_connect": [{"ip": "198.18.0.1", "port": 443, "status": {"failure": None}}],
        "tls_handshakes": [{"failure": "connection_reset"}],
        "x_timings": {"dns": 0.01, "connect": 0.02}}
    records[2]["test_runtime"] = "slow"  # a field of the wrong type is null, not the row
    return records


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write(data / NAME.format(1, ".gz"), lines(_varied(1)))
    write(data / NAME.format(2, ".zst"), lines(_varied(2)))
    write(data / NAME.format(3, ""), lines(_varied(3)))
    write(data / NAME.format(4, ".gz"), b"")
    return data


def test_fast_and_careful_paths_write_the_same_store(clean: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fast, careful = tmp_path / "fast", tmp_path / "careful"
    with monkeypatch.context() as patch:
        patch.setattr(export_scan, "BATCH_FILES", 2)  # two batches: one decoded ahead
        calls = _careful_calls(patch)
        result = export([clean], fast)
    assert calls == []
    assert (result.exported, result.rows) == (4, 18)
    with monkeypatch.context() as patch:
        patch.setattr(export_module, "decode_batch", lambda paths, _: [None] * len(paths))
        assert export([clean], careful).rows == 18
    assert _rows(fast) == _rows(careful)
    assert _manifest(fast) == _manifest(careful)  # same hashes, so the same file names
    assert [r[-4] for r in _rows(fast)][:6] == [1, 2, 3, 4, 5, 6]  # line, per segment
    timings = duckdb.connect().execute(
        f"SELECT test_runtime, timing_connect, tls_handshake_failure FROM read_parquet("
        f"'{fast}/measurements/**/*.parquet') WHERE line IN (2, 3) ORDER BY segment, line "
        f"LIMIT 2").fetchall()
    assert timings == [(0.5, 0.02, "connection_reset"), (None, None, None)]


def test_segments_the_scan_cannot_number_go_the_careful_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    record = web(TWITTER, "2024-03-01 00:00:00")
    good = write(data / NAME.format(1, ".gz"), lines([record] * 3))
    blank = write(data / NAME.format(2, ".gz"), lines([record, b"", record, b"  ", record]))
    torn = write(data / NAME.format(3, ""), lines([record] * 2) + orjson.dumps(record))
    no_input = write(data / NAME.format(4, ".gz"), lines([record, {"input": 1}, record]))
    listed = write(data / NAME.format(5, ".gz"), lines([record, [1], record]))
    calls = _careful_calls(monkeypatch)
    result = export([data], store)
    assert calls == [blank, torn, no_input, listed]
    assert (result.exported, result.rows) == (5, 3 + 3 + 2 + 2 + 2)
    assert [(e.file.name, e.line, e.reason.split(" (")[0]) for e in result.errors.sorted()] == [
        (torn.name, 3, "torn last line"), (no_input.name, 2, "no 'input' string"),
        (listed.name, 2, "not a JSON object: list")]
    numbered = duckdb.connect().execute(
        f"SELECT segment, list(line ORDER BY line) FROM read_parquet("
        f"'{store}/measurements/**/*.parquet') GROUP BY 1 ORDER BY 1").fetchall()
    assert numbered == [(good.name, [1, 2, 3]), (blank.name, [1, 3, 5]), (torn.name, [1, 2]),
                        (no_input.name, [1, 3]), (listed.name, [1, 3])]
