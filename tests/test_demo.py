"""`kzprobe demo`: the quick-start command runs the daemon over the simulated network end to
end: a first sweep (the golden summary), a DNS block added and an international cut between
two daemon runs, the events that follow, and an output directory holding one run only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from kzprobe.alerts import journal
from kzprobe.demo_run import CONFIG_NAME, clear_previous, observed
from kzprobe.errors import KzprobeError
from kzprobe.storage.segments import iter_records, list_segments

GOLDEN = Path(__file__).parent / "golden" / "demo_summary.json"
# The verdict keys the golden summary pins, per target (OONI's, then kzprobe's).
SUMMARY_KEYS = ("dns_consistency", "body_length_match", "status_code_match", "headers_match",
                "title_match", "blocking", "accessible", "interference",
                "sni_blocking_confirmed", "blockpage", "tls_mitm_issuer", "x_tls_mitm_known",
                "dns_experiment_failure", "http_experiment_failure", "control_failure")


def host(record: dict[str, Any]) -> str:
    return str(record["input"]).split("//")[1].split(":")[0]


def target_sweeps(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The target records (not the anchors' checks), by sweep, in the order written."""
    sweeps: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        notes = record["annotations"]
        if notes["kzprobe_group"] == "default":
            sweeps.setdefault(notes["kzprobe_sweep"], []).append(record)
    return list(sweeps.values())


def read_records(directory: Path) -> list[dict[str, Any]]:
    """The records of the segments (the event log beside them is no segment)."""
    segments = [p for p in list_segments([directory]) if not p.name.startswith("events-")]
    return list(iter_records(segments))


class DemoRun:
    def __init__(self, result: subprocess.CompletedProcess[str], records: list[Any],
                 events: list[dict[str, Any]], output: Path) -> None:
        self.result = result
        self.records = records
        self.events = events
        self.output = output
        self.sweeps = target_sweeps(records)
        self.first = self.sweeps[0]  # run 1: what the golden summary pins
        self.by_host = {host(r): r["test_keys"] for r in self.first}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One real `kzprobe demo` run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("demo") / "data"
    result = subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    events, _ = journal.read_after(out, 0, 1000)
    return DemoRun(result, read_records(out), events, out)


def test_demo_writes_one_record_per_target_and_a_summary(demo: DemoRun) -> None:
    """Run 1 sweeps every target once: NDJSON on disk, each simulated fault visible."""
    result, records, by_host = demo.result, demo.first, demo.by_host
    assert len(records) == len(by_host) >= 10
    assert by_host["news.demo"]["requests"][0]["response"]["code"] == 200
    assert by_host["opposition.demo"]["dns_experiment_failure"] == "dns_nxdomain_error"
    assert by_host["vpn.demo"]["tls_handshakes"][0]["failure"] == "connection_reset"
    assert by_host["media.demo"]["tls_handshakes"][0]["failure"] == "generic_timeout_error"
    assert by_host["social.demo"]["tls_handshakes"][0]["failure"] == "ssl_unknown_authority"
    assert "Страница заблокирована" in by_host["blocked.demo"]["requests"][0]["response"]["body"]
    verdicts = {host: (keys["blocking"], keys["interference"]) for host, keys in by_host.items()}
    assert verdicts == {
        "plain.demo": (False, []),
        "news.demo": (False, []),
        "жаңалықтар.demo": (False, []),
        "opposition.demo": ("dns", ["dns.nxdomain"]),
        "rights.demo": ("dns", ["dns.bogon"]),
        "vpn.demo": ("http-failure", ["tls.reset"]),
        "media.demo": ("http-failure", ["tls.timeout"]),
        "radio.demo": (False, ["throttling"]),
        "blocked.demo": (False, ["http.blockpage"]),  # OONI misses it: same status and headers
        "social.demo": ("http-failure", ["tls.mitm"]),
        "down.demo": (False, []),  # refused for the control too: down, not censored
        "h3.demo": (False, []),
        "h3blocked.demo": (False, ["quic.timeout"]),  # HTTPS fine, QUIC dropped
        "127.0.0.14": (False, []),  # dot://: the honest DoT resolver answers
    }
    (shake,) = by_host["h3.demo"]["quic_handshakes"]
    assert shake["failure"] is None and by_host["h3.demo"]["requests"][-1]["network"] == "udp"
    assert by_host["h3blocked.demo"]["quic_handshakes"][0]["failure"] == "generic_timeout_error"
    assert by_host["social.demo"]["tls_mitm_issuer"] == "Security Certificate"
    assert by_host["vpn.demo"]["sni_blocking_confirmed"] is True
    assert by_host["blocked.demo"]["blockpage"]
    assert "measured:" in result.stdout and "written as NDJSON" in result.stdout
    assert orjson.loads(result.stderr.splitlines()[-1])["event"] == "stopped"


def test_summary_prints_titles_and_json_values(demo: DemoRun) -> None:
    """Page titles as the analysis reads them, values as the records spell them."""
    out = demo.result.stdout
    assert 'HTTP 200 "Demo News"' in out and 'HTTP 200 "Жаңалықтар"' in out
    assert "(OONI blocking: false)" in out and '(OONI blocking: "dns")' in out
    assert not any(word in out for word in ("False", "None", "True", "''"))


def test_a_dns_block_added_between_runs_is_one_blocked_event(demo: DemoRun) -> None:
    """confirm = 1: run 1 announces what it finds blocked (from "unknown": first seen); the
    only target event after it is news.demo, blocked by the ISP resolver in between, with
    the record that decided it (the full sweep after recovery) as evidence."""
    targets = [e for e in demo.events if e.get("scope") != "network"]
    first_ids = {r["x_measurement_uid"] for r in demo.first}
    run1 = [e for e in targets if e["evidence"][0]["measurement_uid"] in first_ids]
    later = [e for e in targets if e not in run1]
    assert {host(e) for e in run1} == {"opposition.demo", "rights.demo", "vpn.demo",
                                        "media.demo", "radio.demo", "blocked.demo",
                                        "social.demo", "h3blocked.demo"}
    assert {(e["kind"], e["from"]["state"]) for e in run1} == {("blocked", "unknown")}
    assert [(host(e), e["kind"], e["from"]["state"], e["to"]) for e in later] == [
        ("news.demo", "blocked", "ok", {"state": "blocked", "interference": ["dns.nxdomain"]})]
    recovery_ids = {r["x_measurement_uid"] for r in demo.sweeps[2]}
    assert later[0]["evidence"][0]["measurement_uid"] in recovery_ids
    assert "https://news.demo" in demo.result.stdout.split("Events (")[1]


def test_the_cut_is_one_outage_and_explains_the_sweep_in_it(demo: DemoRun) -> None:
    """The anchors see the international cut: one outage event, then one recovery; the
    sweep in between is stamped with the outage, its failures set aside (x_outage), and
    no target event comes from it; the recovery starts a full sweep."""
    network = [(e["kind"], e["to"]["state"]) for e in demo.events if e.get("scope") == "network"]
    assert network == [("outage", "international_outage"), ("recovered", "online")]
    asns = {e["probe_asn"] for e in demo.events} | {r["probe_asn"] for r in demo.records}
    assert asns == {"AS64501"}  # detected by [geoip]: the outage is on the records' network
    seqs = {e["kind"]: e["seq"] for e in demo.events if e.get("scope") == "network"}
    inside = [e for e in demo.events if seqs["outage"] < e["seq"] < seqs["recovered"]]
    assert inside == []
    assert len(demo.sweeps) == 3 and all(len(s) == len(demo.first) for s in demo.sweeps)
    cut, after = demo.sweeps[1], demo.sweeps[2]
    assert {r["x_network_state"] for r in cut} == {"international_outage"}
    assert {r["x_network_state"] for r in demo.first + after} == {"online"}
    flagged = {host(r) for r in cut if r.get("x_outage") is True}
    assert {"news.demo", "plain.demo", "vpn.demo", "media.demo", "radio.demo"} <= flagged
    assert all(not r["test_keys"]["interference"] for r in cut if r.get("x_outage"))
    # The ISP's own boxes answer in the cut: their evidence proves itself and is kept.
    kept = {host(r): r["test_keys"]["interference"] for r in cut if not r.get("x_outage")
            and r["test_keys"]["interference"]}
    assert kept == {"blocked.demo": ["http.blockpage"], "social.demo": ["tls.mitm"]}
    anchors = [r for r in demo.records if r["annotations"]["kzprobe_group"] == "anchors"]
    assert any(r.get("x_outage") is True and host(r) == "example.demo" for r in anchors)
    assert "received 4 POSTs (format json): grouped (8 events), outage, recovered, blocked" \
        in demo.result.stdout


def test_the_report_shows_the_events_and_the_outage(demo: DemoRun) -> None:
    """The HTML report reads the event log beside the segments."""
    page = (demo.output / "report.html").read_text("utf-8")
    assert "international_outage" in page and "news.demo" in page


def test_clear_previous_removes_only_a_demo_runs_files(tmp_path: Path) -> None:
    """A directory the demo wrote before is emptied of its files (a report then shows one
    run); anything else in it stays; an empty directory is used as it is."""
    assert clear_previous(tmp_path) == 0
    own = [CONFIG_NAME, "kzprobe-20261207T000000Z-demo-1-000001.ndjson", "events-20261207.ndjson",
           "alerts-state.json", "alerts-outbox.json", "report.html"]
    for name in [*own, "notes.txt"]:
        (tmp_path / name).write_text("x")
    assert clear_previous(tmp_path) == len(own)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_clear_previous_refuses_a_directory_that_is_not_the_demos(tmp_path: Path) -> None:
    """Real data (no demo config) is neither mixed with demo records nor deleted."""
    segment = tmp_path / "kzprobe-20261207T000000Z-vps1-1-000001.ndjson"
    segment.write_text("{}\n")
    with pytest.raises(KzprobeError, match="not a previous demo's output"):
        clear_previous(tmp_path)
    assert segment.read_text() == "{}\n"


@pytest.mark.parametrize("body", [
    "<HTML><HEAD><TITLE>Доступ ограничен</TITLE></HEAD></HTML>",  # upper-case tags
    {"format": "base64", "data": "PHRpdGxlPkJsb2NrZWQ8L3RpdGxlPv8="},  # not UTF-8: base64
])
def test_summary_line_shows_the_title_the_analysis_compares(body: Any) -> None:
    """The demo's "measured" line quotes the page title as OONI's WebGetTitle (the one the
    title_match verdict uses) extracts it, whatever the tags' case or the body's encoding."""
    keys = {"requests": [{"response": {"code": 200, "body": body}}]}
    expected = {str: "Доступ ограничен", dict: "Blocked"}[type(body)]
    assert observed(keys) == f'HTTP 200 "{expected}"'


def test_summary_line_says_when_the_body_was_not_stored() -> None:
    """A body dropped by store_bodies has no title to show: the line says so."""
    keys = {"requests": [{"response": {"code": 200, "body": "", "x_body_length": 512}}]}
    assert observed(keys) == "HTTP 200 (body not stored)"


def summary(by_host: dict[str, Any]) -> dict[str, Any]:
    """Every target's verdict keys, the TLS failures seen and OONI's body proportion."""
    out: dict[str, Any] = {}
    for host, keys in sorted(by_host.items()):
        row = {key: keys.get(key) for key in SUMMARY_KEYS}
        row["body_proportion"] = round(float(keys.get("body_proportion") or 0.0), 4)
        row["tls_failures"] = sorted({str(s.get("failure")) for s in keys.get("tls_handshakes")
                                      or []})
        row["tcp_failures"] = sorted({str(c.get("status", {}).get("failure"))
                                      for c in keys.get("tcp_connect") or []})
        out[host] = row
    return out


def test_demo_matches_the_golden_summary(demo: DemoRun) -> None:
    """Every target's OONI keys and interference equal the stored summary.

    The summary was recorded from the code before the experiment-shape refactor (issue 15);
    a change of any verdict shows here as a diff. It pins run 1, the first sweep (later
    sweeps run in a changed network). Regenerate only for an intended change:
    ``python tests/test_demo.py > tests/golden/demo_summary.json`` and review the diff.
    """
    expected = orjson.loads(GOLDEN.read_bytes())
    assert summary(demo.by_host) == expected


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", str(data)],
                       check=True, capture_output=True, timeout=120)
        first = target_sweeps(read_records(data))[0]
        hosts = {host(r): r["test_keys"] for r in first}
        sys.stdout.write(orjson.dumps(summary(hosts), option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS).decode() + "\n")
