"""Reading segments for a report: damaged files, races with the writer, time windows."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

import pytest

from kzprobe.report import ReportError, Window, build_report
from kzprobe.report import scan as scan_module
from kzprobe.report.command import FORMATS, ReportRequest, run
from kzprobe.storage.segments import iter_lines
from tests.report.builders import endpoint, lines, web, write


def _day(n: int, hour: int = 0) -> str:
    return f"2024-03-{n:02d} {hour:02d}:00:00"


def test_truncated_gzip_is_salvaged_and_the_rest_read(tmp_path: Path) -> None:
    """A gzip cut short is read up to the cut and reported; the other files are read whole."""
    write(tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson.gz",
          lines([web(f"https://a{i}.kz/", _day(1)) for i in range(2)]))
    whole = gzip.compress(lines([web(f"https://b{i}.kz/", _day(2)) for i in range(40_000)]))
    cut = tmp_path / "kz-20240302T000000Z-h-1-000002.ndjson.gz"
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    write(tmp_path / "kz-20240303T000000Z-h-1-000003.ndjson",
          lines([web("https://c.kz/", _day(3))]))
    salvaged = sum(1 for _ in iter_lines(cut))
    assert 0 < salvaged < 40_000
    report = build_report([tmp_path])
    assert report.summary["records"] == 2 + salvaged + 1
    assert [(e.file, e.reason.split(":")[0]) for e in report.stats.errors] == [(cut, "unreadable")]


def test_a_segment_compressed_after_listing_is_read_from_its_twin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain segment listed just before the writer compressed it away is read as .gz."""
    write(tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson.gz",
          lines([web("https://a.kz/", _day(1))]))
    stale = [tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson"]
    monkeypatch.setattr(scan_module, "list_files", lambda paths: stale)
    report = build_report([tmp_path])
    assert (report.summary["records"], report.summary["corrupt_lines"]) == (1, 0)


def test_odd_values_are_data_not_crashes(tmp_path: Path) -> None:
    """Wrong types inside a record give an unknown state; a record without a URL is an error."""
    odd = web("https://odd.kz/", _day(1))
    odd["test_keys"] = [1, 2]
    odd_codes = web("https://codes.kz/", _day(1))
    odd_codes["test_keys"]["interference"] = "tls.timeout"  # type: ignore[index]
    no_url = web("https://x.kz/", _day(1)) | {"input": 5}
    path = write(tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson",
                 lines([odd, odd_codes, no_url]))
    report = build_report([tmp_path])
    states = {r["input"]: r["last_state"] for r in report.table("targets").records()}
    assert states == {"https://odd.kz/": "unknown", "https://codes.kz/": "accessible"}
    assert [(e.file, e.line, e.reason) for e in report.stats.errors] == [
        (path, 3, "no 'input' string")]


@pytest.mark.parametrize(("record", "state", "mechanism"), [
    (web("u", _day(1), interference=["http.blockpage"]), "blocked", "http.blockpage"),
    (web("u", _day(1), blocking="dns", accessible=False), "blocked", "ooni.dns"),
    (web("u", _day(1), blocking="dns", interference=["tls.timeout", "dns.bogon"]),
     "blocked", "dns.bogon+tls.timeout"),
    (web("u", _day(1)), "accessible", None),
    (web("u", _day(1), accessible=False), "down", None),
    (web("u", _day(1), blocking=None, accessible=None), "unknown", None),
    (endpoint("u", _day(1), reachable=True), "accessible", None),
    (endpoint("u", _day(1), reachable=False), "unknown", None),
    (endpoint("u", _day(1), reachable=False, interference=["tor.timeout"]), "blocked",
     "tor.timeout"),
])
def test_state_model(tmp_path: Path, record: dict[str, object], state: str,
                     mechanism: str | None) -> None:
    """Interference or an OONI blocking method is blocked; OONI's false is accessible or down."""
    write(tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson", lines([record]))
    row = build_report([tmp_path]).table("targets").records()[0]
    assert (row["last_state"], row["last_mechanism"]) == (state, mechanism)


def test_window_keeps_since_and_drops_until(fleet: list[Path]) -> None:
    """--since is inclusive, --until exclusive; changes are those seen inside the window."""
    window = Window(since=datetime(2024, 3, 2), until=datetime(2024, 3, 3))
    report = build_report(fleet, window)
    assert (report.summary["records"], report.summary["first_seen"],
            report.summary["last_seen"]) == (6, "2024-03-02 00:00:00", "2024-03-02 01:00:00")
    assert [(c["input"], c["at"]) for c in report.table("changes").records()] == [
        ("openvpn://vpn.example:1194/", "2024-03-02 01:00:00")]


def test_segments_outside_the_window_are_not_read(tmp_path: Path) -> None:
    """A segment whose writer moved on before --since, or starting after --until, is skipped."""
    corrupt = b"{not json"
    write(tmp_path / "kz-20240301T000000Z-h-1-000001.ndjson",
          lines([web("https://a.kz/", _day(1)), corrupt]))
    write(tmp_path / "kz-20240302T000000Z-h-1-000002.ndjson",
          lines([web("https://a.kz/", _day(2, 12))]))
    # two writers on a dotted host name (pids 7 and 8): 8 opening a segment says nothing of 7
    write(tmp_path / "kz-20240301T000000Z-vps.example.kz-7-000001.ndjson",
          lines([web("https://c.kz/", _day(2, 14))]))
    write(tmp_path / "kz-20240302T000000Z-vps.example.kz-8-000001.ndjson",
          lines([web("https://c.kz/", _day(2, 15))]))
    write(tmp_path / "kz-20240305T000000Z-h-1-000003.ndjson", lines([corrupt]))
    # probe ids with hyphens (same pid 9): probe 2 opening a segment says nothing of probe 1
    write(tmp_path / "kz-20240301T000000Z-almaty-1-9-000001.ndjson",
          lines([web("https://d.kz/", _day(2, 14))]))
    write(tmp_path / "kz-20240302T000000Z-almaty-2-9-000001.ndjson",
          lines([web("https://d.kz/", _day(2, 15))]))
    # another writer (pid 2) has no later segment: its file may hold anything, so it is read
    write(tmp_path / "kz-20240301T000000Z-h-2-000001.ndjson",
          lines([web("https://b.kz/", _day(2, 13))]))
    window = Window(since=datetime(2024, 3, 2, 12), until=datetime(2024, 3, 4))
    report = build_report([tmp_path], window)
    assert (report.summary["records"], report.summary["corrupt_lines"]) == (6, 0)


def test_no_segments_is_an_error(tmp_path: Path) -> None:
    """An empty directory or a missing path stops the report with a one-line reason."""
    with pytest.raises(ReportError, match="no segments"):
        build_report([tmp_path])
    with pytest.raises(ReportError, match="no such file"):
        build_report([tmp_path / "missing"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_window_still_renders(fleet: list[Path], fmt: str) -> None:
    """No record in the window is a report of zeros in every format, not an error."""
    window = Window(since=datetime(2030, 1, 1))
    data = run(ReportRequest(paths=tuple(fleet), window=window, format=fmt))
    report = build_report(fleet, window)
    assert (report.summary["records"], report.summary["changes"]) == (0, 0)
    assert all(not table.rows for table in report.tables)
    assert data.startswith({"json": b"{", "csv": b"input,", "html": b"<!DOCTYPE html>",
                            "table": b"kzprobe report: 0 records"}[fmt])
