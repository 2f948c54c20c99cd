"""Reports over a generated fleet with known answers, asserted exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kzprobe.report import Report, Table, build_report
from tests.report.conftest import BLOCKPAGE, DOWN, MECH, NEWS, OONI_ONLY, TWITTER, VPN


def _pick(table: Table, *columns: str) -> list[tuple[Any, ...]]:
    index = [table.columns.index(c) for c in columns]
    return [tuple(row[i] for i in index) for row in table.rows]


@pytest.fixture
def report(fleet: list[Path]) -> Report:
    return build_report(fleet)


def test_summary_counts_files_records_and_corrupt_lines(report: Report) -> None:
    """22 usable records from 4 files (1 open); 3 corrupt lines; the torn tail is no error."""
    assert report.summary == {
        "records": 22, "urls": 7, "networks": 2,
        "first_seen": "2024-03-01 00:00:00", "last_seen": "2024-03-03 00:00:00",
        "targets_blocked_now": 5, "changes": 4,
        "files": 4, "open_segments": 1, "corrupt_lines": 3,
        "outage_records": 0, "event_files": 0, "events": 0, "outage_periods": 0,
    }


def test_corrupt_lines_are_reported_with_file_and_line(report: Report, fleet: list[Path]) -> None:
    """Each unusable line is named by file and line number; blank lines are skipped silently."""
    plain = fleet[1] / "kz-20240301T000000Z-vps2-200-000001.ndjson"
    found = [(e.file, e.line, e.reason.split(":")[0]) for e in report.stats.errors]
    assert found == [
        (plain, 3, "invalid JSON"),
        (plain, 5, "not a JSON object"),
        (plain, 7, "no 'measurement_start_time' as YYYY-MM-DD HH"),
    ]


def test_targets_current_state_and_since(report: Report) -> None:
    """Per target and network: the decisive state, since when, and the window of the change."""
    assert _pick(report.table("targets"), "input", "probe_asn", "state", "mechanism", "since",
                 "since_after", "changes", "last_state") == [
        (BLOCKPAGE, "AS9198", "blocked", "http.blockpage", "2024-03-01 00:00:00", None, 0,
         "blocked"),
        (MECH, "AS9198", "blocked", "tls.timeout", "2024-03-01 02:00:00",
         "2024-03-01 01:00:00", 1, "blocked"),
        (OONI_ONLY, "AS9198", "blocked", "ooni.tcp_ip", "2024-03-02 01:00:00", None, 0,
         "blocked"),
        (TWITTER, "AS206026", "blocked", "tls.mitm", "2024-03-01 00:30:00", None, 0, "blocked"),
        (TWITTER, "AS9198", "blocked", "tls.timeout", "2024-03-01 02:00:00",
         "2024-03-01 01:00:00", 1, "blocked"),
        (DOWN, "AS9198", "down", None, None, None, 0, "down"),
        (NEWS, "AS206026", "accessible", None, "2024-03-01 02:30:00", None, 0, "accessible"),
        (NEWS, "AS9198", "accessible", None, "2024-03-02 00:00:00", "2024-03-01 02:00:00", 1,
         "unknown"),
        (VPN, "AS9198", "accessible", None, "2024-03-02 01:00:00", "2024-03-02 00:00:00", 1,
         "accessible"),
    ]


def test_targets_shares_by_ooni_and_by_interference(report: Report) -> None:
    """Blocked shares by either rule, OONI's blocking alone and kzprobe's interference alone."""
    assert _pick(report.table("targets"), "input", "probe_asn", "test_name", "category_code",
                 "measurements", "blocked", "blocked_share", "ooni_blocked_share",
                 "interference_share") == [
        (BLOCKPAGE, "AS9198", "web_connectivity", "POLR", 1, 1, 1.0, 0.0, 1.0),
        (MECH, "AS9198", "web_connectivity", "ANON", 3, 3, 1.0, 1.0, 1.0),
        (OONI_ONLY, "AS9198", "web_connectivity", "HUMR", 1, 1, 1.0, 1.0, 0.0),
        (TWITTER, "AS206026", "web_connectivity", "GRP", 3, 3, 1.0, 1.0, 1.0),
        (TWITTER, "AS9198", "web_connectivity", "GRP", 5, 3, 0.6, 0.6, 0.6),
        (DOWN, "AS9198", "web_connectivity", "MISC", 1, 0, 0.0, 0.0, 0.0),
        (NEWS, "AS206026", "web_connectivity", "NEWS", 1, 0, 0.0, 0.0, 0.0),
        (NEWS, "AS9198", "web_connectivity", "NEWS", 5, 3, 0.6, 0.6, 0.6),
        (VPN, "AS9198", "openvpn", None, 2, 1, 0.5, 0.0, 0.5),
    ]


def test_targets_evidence_and_blocked_times(report: Report) -> None:
    """Mechanisms seen, blockpage and MITM issuer, and first/last time seen blocked."""
    assert _pick(report.table("targets"), "input", "probe_asn", "mechanisms", "blockpages",
                 "mitm_issuers", "first_blocked", "last_blocked") == [
        (BLOCKPAGE, "AS9198", ["http.blockpage"], ["cp.d_corp_kz_ps"], [],
         "2024-03-01 00:00:00", "2024-03-01 00:00:00"),
        (MECH, "AS9198", ["tls.reset", "tls.timeout"], [], [],
         "2024-03-01 00:00:00", "2024-03-01 02:00:00"),
        (OONI_ONLY, "AS9198", ["ooni.tcp_ip"], [], [], "2024-03-02 01:00:00",
         "2024-03-02 01:00:00"),
        (TWITTER, "AS206026", ["tls.mitm"], [], ["Security Certificate"],
         "2024-03-01 00:30:00", "2024-03-01 03:30:00"),
        (TWITTER, "AS9198", ["tls.timeout"], [], [], "2024-03-01 02:00:00",
         "2024-03-03 00:00:00"),
        (DOWN, "AS9198", [], [], [], None, None),
        (NEWS, "AS206026", [], [], [], None, None),
        (NEWS, "AS9198", ["dns.nxdomain"], [], [], "2024-03-01 00:00:00",
         "2024-03-01 02:00:00"),
        (VPN, "AS9198", ["openvpn.handshake_timeout"], [], [], "2024-03-02 00:00:00",
         "2024-03-02 00:00:00"),
    ]


def test_change_events_with_their_windows(report: Report) -> None:
    """Flips between accessible and blocked, and mechanism changes, in time order."""
    assert report.table("changes").records() == [
        {"input": MECH, "probe_asn": "AS9198", "from_state": "blocked",
         "from_mechanism": "tls.reset", "to_state": "blocked", "to_mechanism": "tls.timeout",
         "after": "2024-03-01 01:00:00", "at": "2024-03-01 02:00:00"},
        {"input": TWITTER, "probe_asn": "AS9198", "from_state": "accessible",
         "from_mechanism": None, "to_state": "blocked", "to_mechanism": "tls.timeout",
         "after": "2024-03-01 01:00:00", "at": "2024-03-01 02:00:00"},
        {"input": NEWS, "probe_asn": "AS9198", "from_state": "blocked",
         "from_mechanism": "dns.nxdomain", "to_state": "accessible", "to_mechanism": None,
         "after": "2024-03-01 02:00:00", "at": "2024-03-02 00:00:00"},
        {"input": VPN, "probe_asn": "AS9198", "from_state": "blocked",
         "from_mechanism": "openvpn.handshake_timeout", "to_state": "accessible",
         "to_mechanism": None, "after": "2024-03-02 00:00:00", "at": "2024-03-02 01:00:00"},
    ]


def test_periods_cover_each_run_of_a_state(report: Report) -> None:
    """A target's decisive runs, first to last measurement, for the timelines."""
    periods = [r for r in report.table("periods").records() if r["input"] == TWITTER]
    assert [(r["probe_asn"], r["state"], r["mechanism"], r["start"], r["end"], r["after"])
            for r in periods] == [
        ("AS206026", "blocked", "tls.mitm", "2024-03-01 00:30:00", "2024-03-01 03:30:00", None),
        ("AS9198", "accessible", None, "2024-03-01 00:00:00", "2024-03-01 01:00:00", None),
        ("AS9198", "blocked", "tls.timeout", "2024-03-01 02:00:00", "2024-03-03 00:00:00",
         "2024-03-01 01:00:00"),
    ]


def test_categories(report: Report) -> None:
    """Per category (the target's latest code): targets blocked now, ever, and shares."""
    assert report.table("categories").rows == (
        ("GRP", 2, 2, 2, 8, 6, 0.75, 0),
        ("ANON", 1, 1, 1, 3, 3, 1.0, 0),
        ("HUMR", 1, 1, 1, 1, 1, 1.0, 0),
        ("POLR", 1, 1, 1, 1, 1, 1.0, 0),
        ("NEWS", 2, 0, 1, 6, 3, 0.5, 0),
        (None, 1, 0, 1, 2, 1, 0.5, 0),
        ("MISC", 1, 0, 0, 1, 0, 0.0, 0),
    )


def test_networks_read_together(report: Report) -> None:
    """Files of two probes in two ISPs are reported per network side by side."""
    assert report.table("networks").rows == (
        ("AS206026", "KZ", "Kcell JSC", 4, 2, 1, 3, 0.75,
         "2024-03-01 00:30:00", "2024-03-01 03:30:00", 0),
        ("AS9198", "KZ", "JSC Kazakhtelecom", 18, 7, 4, 12, 0.6667,
         "2024-03-01 00:00:00", "2024-03-03 00:00:00", 0),
    )


def test_days_time_series(report: Report) -> None:
    """Per day and network: measurements, blocked (either rule, OONI, kzprobe), targets."""
    assert report.table("days").rows == (
        ("2024-03-01", "AS206026", 4, 3, 0.75, 3, 3, 2, 1, 0),
        ("2024-03-01", "AS9198", 10, 8, 0.8, 7, 8, 4, 4, 0),
        ("2024-03-02", "AS9198", 6, 3, 0.5, 2, 2, 5, 3, 0),
        ("2024-03-03", "AS9198", 2, 1, 0.5, 1, 1, 2, 1, 0),
    )


def test_mechanisms_by_category(report: Report) -> None:
    """Blocked measurements and targets per interference code and category."""
    assert _pick(report.table("mechanisms"), "mechanism", "category_code", "measurements",
                 "targets") == [
        ("dns.nxdomain", "NEWS", 3, 1),
        ("tls.mitm", "GRP", 3, 1),
        ("tls.timeout", "GRP", 3, 1),
        ("tls.reset", "ANON", 2, 1),
        ("http.blockpage", "POLR", 1, 1),
        ("ooni.tcp_ip", "HUMR", 1, 1),
        ("openvpn.handshake_timeout", None, 1, 1),
        ("tls.timeout", "ANON", 1, 1),
    ]
