"""The change-event log beside the segments: events and outage tables, damage, limits, shares."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from kzprobe.cli import main
from kzprobe.report import ReportError, Window, build_report, events
from kzprobe.report.command import ReportRequest, run
from kzprobe.report.render import CSV_TABLES
from tests.report.builders import lines, network_event, target_event, web, write
from tests.report.conftest import (
    EVENTS,
    MECH,
    SEGMENT,
    TWITTER,
    in_outage,
    outage_events,
    outage_records,
)

TW = TWITTER


def test_events_table_in_time_order(probe: Path) -> None:
    """Every event, target and network, with its mechanism; the torn tail is no error."""
    report = build_report([probe])
    rows = report.table("events").records()
    assert [(r["at"], r["kind"], r["scope"], r["input"], r["from_state"], r["from_mechanism"],
             r["to_state"], r["to_mechanism"]) for r in rows] == [
        ("2026-12-07 14:05:00", "blocked", "target", TW, "ok", None, "blocked", "tls.timeout"),
        ("2026-12-07 15:00:00", "outage", "network", None, "online", None,
         "international_outage", None),
        ("2026-12-07 15:45:00", "recovered", "network", None, "international_outage", None,
         "online", None),
        ("2026-12-07 16:30:00", "unblocked", "target", TW, "blocked", "tls.timeout", "ok", None),
        ("2026-12-07 17:00:00", "mechanism_changed", "target", MECH, "blocked", "tls.timeout",
         "blocked", "tls.mitm"),
        ("2026-12-07 18:00:00", "degraded", "network", None, "online", None, "degraded", None),
    ]
    assert (rows[0]["probe_asn"], rows[0]["probe_id"], rows[0]["group"],
            rows[0]["sni_blocking_confirmed"], rows[0]["evidence"]) == (
        "AS9198", "vps1", "watch", True, ["uid-1"])
    assert rows[1]["evidence"] == ["https://www.example.com/ (international): "
                                   "generic_timeout_error"]
    assert (report.summary["events"], report.summary["event_files"],
            report.summary["corrupt_lines"]) == (6, 1, 0)


def test_outage_periods_with_start_end_state_duration(probe: Path) -> None:
    """A closed period has a duration; one still open ends at null (ongoing)."""
    assert build_report([probe]).table("outages").rows == (
        ("KZ", "AS9198", "vps1", "international_outage", "2026-12-07 15:00:00",
         "2026-12-07 15:45:00", 2700, "45m 00s"),
        ("KZ", "AS9198", "vps1", "degraded", "2026-12-07 18:00:00", None, None, None),
    )


def test_an_outage_entered_before_the_first_event_read_starts_at_null(tmp_path: Path) -> None:
    """A first event leaving an outage says one was under way: start null, end known."""
    write(tmp_path / SEGMENT, lines(outage_records()))
    write(tmp_path / EVENTS, lines([
        network_event("recovered", "2026-12-07T15:45:00Z", frm="full_outage", to="online"),
        network_event("outage", "2026-12-07T20:00:00Z", frm="online", to="dns_outage", seq=2,
                      asn="AS206026", probe_id="vps2"),
        network_event("outage", "2026-12-07T20:30:00Z", frm="dns_outage", to="full_outage",
                      seq=3, asn="AS206026", probe_id="vps2"),
        network_event("recovered", "2026-12-09T22:31:05Z", frm="full_outage", to="online",
                      seq=4, asn="AS206026", probe_id="vps2"),
    ]))
    assert build_report([tmp_path]).table("outages").rows == (
        ("KZ", "AS9198", "vps1", "full_outage", None, "2026-12-07 15:45:00", None, None),
        ("KZ", "AS206026", "vps2", "dns_outage", "2026-12-07 20:00:00", "2026-12-07 20:30:00",
         1800, "30m 00s"),
        ("KZ", "AS206026", "vps2", "full_outage", "2026-12-07 20:30:00", "2026-12-09 22:31:05",
         180065, "2d 02h"),
    )


def test_window_keeps_events_inside_and_outages_overlapping(probe: Path) -> None:
    """--since/--until select events by ``at``; an outage open across --since still shows."""
    report = build_report([probe], Window(since=datetime(2026, 12, 7, 15, 30),
                                          until=datetime(2026, 12, 7, 17)))
    assert [r["kind"] for r in report.table("events").records()] == ["recovered", "unblocked"]
    assert [(r["state"], r["start"], r["end"]) for r in report.table("outages").records()] == [
        ("international_outage", "2026-12-07 15:00:00", "2026-12-07 15:45:00")]
    later = build_report([probe], Window(since=datetime(2026, 12, 7, 16)))
    assert [r["state"] for r in later.table("outages").records()] == ["degraded"]


def test_logs_of_days_before_since_are_not_opened(probe: Path) -> None:
    """An event log two days older than --since is skipped by its name (its damage unseen)."""
    old = write(probe / "events-20261201.ndjson", b"{not json\n")
    assert [(e.file, e.line) for e in build_report([probe]).stats.errors] == [(old, 1)]
    report = build_report([probe], Window(since=datetime(2026, 12, 5)))
    assert (report.stats.errors, report.summary["event_files"]) == ((), 1)


def test_damaged_lines_unknown_keys_and_kinds(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad lines are reported by file and line and skipped; unknown kinds and keys are kept
    and ignored; an over-long line is skipped without losing the next one."""
    monkeypatch.setattr(events, "MAX_EVENT_LINE_BYTES", 2000)
    good = outage_events()
    future = good[1] | {"kind": "quarantined", "event_version": 9, "new": [1, 2]}
    huge = good[2] | {"summary": "x" * 5000}
    write(tmp_path / SEGMENT, lines(outage_records()))
    path = write(tmp_path / EVENTS, lines([
        good[0], b"{not json", b"[1]", {"kind": "blocked", "input": TW},
        {"at": "2026-12-07T14:00:00Z"}, good[0] | {"at": "yesterday"}, future, huge, good[3],
        b"", b"   ", good[3] | {"input": None, "event_id": "x"}]))
    report = build_report([tmp_path])
    assert [(e.file, e.line, e.reason.split(":")[0]) for e in report.stats.errors] == [
        (path, 2, "invalid JSON"), (path, 3, "not a JSON object"),
        (path, 4, "no 'at' time (ISO 8601)"), (path, 5, "no 'kind' string"),
        (path, 6, "no 'at' time (ISO 8601)"), (path, 8, "line longer than 2000 bytes"),
        (path, 12, "no 'input' string (a target's event)")]
    assert [r["kind"] for r in report.table("events").records()] == [
        "blocked", "quarantined", "unblocked"]
    assert report.summary["corrupt_lines"] == 7


def test_a_file_is_read_up_to_its_byte_cap(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_EVENTS_FILE_BYTES a log is not read further, and the report says so."""
    data = lines(outage_events())
    cap = data.index(b"\n") + 1
    monkeypatch.setattr(events, "MAX_EVENTS_FILE_BYTES", cap)
    write(tmp_path / SEGMENT, lines(outage_records()))
    path = write(tmp_path / EVENTS, data)
    report = build_report([tmp_path])
    assert [r["kind"] for r in report.table("events").records()] == ["blocked"]
    assert [(e.file, e.line, e.reason) for e in report.stats.errors] == [
        (path, 1, f"not read beyond {cap} bytes")]


@pytest.mark.parametrize(("cap", "kinds", "not_read", "files_not_read"), [
    (2, ["unblocked", "mechanism_changed"], 0, 1),
    (3, ["recovered", "unblocked", "mechanism_changed"], 2, 0),
])
def test_only_the_newest_events_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cap: int, kinds: list[str], not_read: int,
                                         files_not_read: int) -> None:
    """MAX_EVENTS bounds what is kept: the newest, and the notes say what was left out."""
    monkeypatch.setattr(events, "MAX_EVENTS", cap)
    write(tmp_path / SEGMENT, lines(outage_records()))
    first, second = outage_events()[:3], outage_events()[3:5]
    write(tmp_path / "events-20261206.ndjson", lines(first))
    write(tmp_path / EVENTS, lines(second))
    data = run(ReportRequest(paths=(tmp_path,), format="json"))
    document = orjson.loads(data)
    assert [e["kind"] for e in document["events"]] == kinds
    assert (f"Only the newest {cap} events were read: {not_read} older events and "
            f"{files_not_read} older event files were left out") in " ".join(document["notes"])


def test_paths_map_to_the_logs_of_their_directories(probe: Path, tmp_path: Path) -> None:
    """A segment file reads its directory's log; a log named on its own is read too, and the
    same event (by id) in a copied directory counts once."""
    assert build_report([probe / SEGMENT]).summary["events"] == 6
    copy = write(tmp_path / "copy" / EVENTS, (probe / EVENTS).read_bytes())
    assert build_report([probe, copy]).summary["events"] == 6
    other = write(tmp_path / "other" / "events-20261208.ndjson", lines([
        target_event("blocked", MECH, "2026-12-08T01:00:00Z", to=("blocked", ["dns.bogon"]),
                     seq=9)]))
    assert build_report([probe / SEGMENT, other]).summary["events"] == 7
    with pytest.raises(ReportError, match="no segments"):
        build_report([other])


def test_an_events_file_is_never_read_as_a_segment(probe: Path) -> None:
    """The log shares the ``.ndjson`` suffix; its lines are events, not corrupt records."""
    report = build_report([probe])
    assert (report.summary["records"], report.summary["files"], report.stats.errors) == (
        5, 1, ())


def test_blocked_shares_leave_out_outage_records(probe: Path) -> None:
    """x_outage records count as measurements but not in any blocked count or share."""
    report = build_report([probe])
    target = report.table("targets").records()[0]
    assert (target["measurements"], target["outage_measurements"], target["blocked"],
            target["blocked_share"], target["interference_share"]) == (5, 2, 2, 0.6667, 0.6667)
    assert report.table("networks").records()[0]["blocked_share"] == 0.6667
    day = report.table("days").records()[0]
    assert (day["blocked"], day["blocked_share"], day["outage_measurements"]) == (2, 0.6667, 2)
    assert report.summary["outage_records"] == 2


def test_outage_records_are_not_observations(probe: Path) -> None:
    """A record measured during an outage neither starts nor ends a period (as for the
    alert tracker): the blocked-looking 15:30 record changes nothing."""
    report = build_report([probe])
    assert [(c["at"], c["to_state"]) for c in report.table("changes").records()] == [
        ("2026-12-07 14:05:00", "blocked")]
    assert [(r["state"], r["start"], r["end"]) for r in report.table("periods").records()] == [
        ("accessible", "2026-12-07 13:00:00", "2026-12-07 13:00:00"),
        ("blocked", "2026-12-07 14:05:00", "2026-12-07 16:00:00")]


def test_an_x_outage_that_is_not_true_is_no_outage(tmp_path: Path) -> None:
    """Only JSON true marks an outage record; another value neither drops nor excludes it."""
    odd = web(TW, "2026-12-07 13:00:00", interference=["tls.timeout"]) | {"x_outage": "yes"}
    write(tmp_path / SEGMENT, lines([odd, web(TW, "2026-12-07 14:00:00") | {"x_outage": False}]))
    report = build_report([tmp_path])
    row = report.table("targets").records()[0]
    assert (report.summary["records"], row["outage_measurements"], row["blocked_share"]) == (
        2, 0, 0.5)


def _main(argv: list[str], capsysbinary: pytest.CaptureFixture[bytes]) -> bytes:
    assert main(argv) == 0
    return capsysbinary.readouterr().out


def test_text_shows_the_timeline_outages_and_the_share_rule(
        probe: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """The terminal report: one line per event with network and mechanism, outage periods,
    and a sentence saying what the blocked shares leave out."""
    text = _main(["report", str(probe)], capsysbinary).decode()
    assert ("2026-12-07 14:05:00 UTC  AS9198/vps1  blocked: https://twitter.com/: ok -> blocked "
            "(tls.timeout) [group watch, SNI confirmed]") in text
    assert ("2026-12-07 15:00:00 UTC  AS9198/vps1  outage: network: online -> "
            "international_outage") in text
    assert "Blocked counts and shares leave out the 2 measurements taken during a network " \
           "outage (records with x_outage: true)." in text
    outages = text[text.index("== outages (2)"):].splitlines()
    assert outages[2].split() == ["AS9198", "vps1", "international_outage", "2026-12-07",
                                  "15:00:00", "2026-12-07", "15:45:00", "45m", "00s"]
    assert outages[3].split()[-2:] == ["18:00:00", "ongoing"]


@pytest.mark.parametrize(("table", "header"), [
    ("events", ["at", "confirmed_at", "kind", "scope", "probe_cc", "probe_asn", "probe_id",
                "input", "group", "category_code", "from_state", "from_mechanism", "to_state",
                "to_mechanism", "sni_blocking_confirmed", "blockpage", "evidence", "event_id",
                "summary"]),
    ("outages", ["probe_cc", "probe_asn", "probe_id", "state", "start", "end", "duration_s",
                 "duration"]),
])
def test_csv_selects_events_and_outages(probe: Path, table: str, header: list[str],
                                        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """--format csv --table events|outages: the tables as the other formats have them."""
    out = _main(["report", str(probe), "--format", "csv", "--table", table], capsysbinary)
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[0] == header
    assert len(rows) == {"events": 7, "outages": 3}[table]


def test_json_carries_events_outages_and_notes(probe: Path) -> None:
    """--format json: the two tables as row objects and the notes beside the summary."""
    document = orjson.loads(run(ReportRequest(paths=(probe,), format="json")))
    assert len(document["events"]) == 6 and len(document["outages"]) == 2
    assert document["notes"][0].startswith("Blocked counts and shares leave out the 2")
    assert document["summary"]["outage_periods"] == 2


def test_the_cli_offers_every_table() -> None:
    """The command line's --table choices are the renderer's tables (kept in two places)."""
    from kzprobe import cli

    assert cli._REPORT_TABLES == CSV_TABLES


def test_a_share_with_only_outage_measurements_is_null(tmp_path: Path) -> None:
    """Nothing measured outside an outage: no share at all, rather than a made-up 0."""
    write(tmp_path / SEGMENT, lines([in_outage(web(TW, "2026-12-07 13:00:00"))]))
    row = build_report([tmp_path]).table("targets").records()[0]
    assert (row["measurements"], row["outage_measurements"], row["blocked_share"]) == (1, 1, None)
