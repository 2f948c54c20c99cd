"""The event log and the state file: SPEC16's event object, durable, and restart-safe."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from kzprobe.alerts import journal
from kzprobe.alerts.core import Alerts
from kzprobe.alerts.store import STATE_FILE
from tests.alerts.conftest import (
    MakeAlerts,
    alerts_config,
    append_bytes,
    blocked,
    event_logs,
    ok,
    read_events,
)

EVENT_KEYS = ["event_version", "event_id", "seq", "kind", "input", "group", "probe_cc",
              "probe_asn", "probe_id", "category_code", "from", "to", "at", "confirmed_at",
              "sni_blocking_confirmed", "blockpage", "evidence", "summary"]


async def sweep(alerts: Alerts, records: list[dict[str, object]], sweep_id: str,
                group: str = "watch") -> None:
    for rec in records:
        rec["annotations"]["kzprobe_sweep"] = sweep_id  # type: ignore[index]
        alerts.observe(rec)
    await alerts.sweep_finished(group, sweep_id, records=len(records))


async def test_event_object_is_spec16(tmp_path: Path, make_alerts: MakeAlerts) -> None:
    """A confirmed block is one line of events-YYYYMMDD.ndjson with SPEC16's keys."""
    alerts = await make_alerts(alerts_config(tmp_path))
    await sweep(alerts, [ok()], "s0")
    await sweep(alerts, [ok()], "s1")
    first = blocked(start="2026-12-07 14:05:00",
                    test_keys={"sni_blocking_confirmed": True})
    await sweep(alerts, [first], "s2")
    assert read_events(tmp_path) == []  # one blocked sweep is no change yet
    await sweep(alerts, [blocked(test_keys={"sni_blocking_confirmed": True})], "s3")
    (event,) = read_events(tmp_path)
    assert list(event) == EVENT_KEYS
    assert re.fullmatch(r"vps1-1-[0-9a-f]{8}", event["event_id"])
    assert event["seq"] == 1 and event["kind"] == "blocked" and event["group"] == "watch"
    assert event["from"] == {"state": "ok", "interference": []}
    assert event["to"] == {"state": "blocked", "interference": ["tls.timeout"]}
    assert event["at"] == "2026-12-07T14:05:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["confirmed_at"])
    assert [e["sweep"] for e in event["evidence"]] == ["s2", "s3"]
    assert event["evidence"][0]["measurement_uid"] == first["x_measurement_uid"]
    assert event["summary"].startswith("https://twitter.com/ blocked on AS9198 since ")
    assert event["summary"].endswith("(tls.timeout, SNI confirmed)")
    assert [p.name for p in event_logs(tmp_path)] == [
        "events-" + event["confirmed_at"][:10].replace("-", "") + ".ndjson"]


async def test_changes_wait_for_their_groups_sweep(tmp_path: Path,
                                                   make_alerts: MakeAlerts) -> None:
    """A change confirmed in one group is written when that group's sweep ends, not another's."""
    alerts = await make_alerts(alerts_config(tmp_path))
    for sweep_id in ("w1", "w2"):
        alerts.observe(blocked(sweep=sweep_id, group="watch"))
    await alerts.sweep_finished("default", "d1", records=0)
    assert read_events(tmp_path) == []
    await alerts.sweep_finished("watch", "w2", records=1)
    assert [e["kind"] for e in read_events(tmp_path)] == ["blocked"]


async def test_no_duplicate_blocked_after_restart(tmp_path: Path,
                                                  make_alerts: MakeAlerts) -> None:
    """A target blocked before a restart raises no second ``blocked`` after it."""
    config = alerts_config(tmp_path)
    first = await make_alerts(config)
    await sweep(first, [blocked()], "s1")
    await sweep(first, [blocked()], "s2")
    await first.aclose(1.0)
    second = await make_alerts(config)
    await sweep(second, [blocked()], "s3")
    await sweep(second, [blocked()], "s4")
    await sweep(second, [ok()], "s5")
    await sweep(second, [ok()], "s6")
    events = read_events(tmp_path)
    assert [(e["kind"], e["seq"]) for e in events] == [("blocked", 1), ("unblocked", 2)]


async def test_events_written_after_the_state_file_are_replayed(
        tmp_path: Path, make_alerts: MakeAlerts) -> None:
    """Killed after appending but before saving the state: the log is replayed at start."""
    config = alerts_config(tmp_path)
    first = await make_alerts(config)
    await sweep(first, [ok()], "s1")
    await sweep(first, [ok()], "s2")
    state = (tmp_path / STATE_FILE).read_bytes()  # the state before the block
    await sweep(first, [blocked()], "s3")
    await sweep(first, [blocked()], "s4")
    await first.aclose(1.0)
    (tmp_path / STATE_FILE).write_bytes(state)
    second = await make_alerts(config)
    await sweep(second, [blocked()], "s5")
    await sweep(second, [blocked()], "s6")
    assert [e["seq"] for e in read_events(tmp_path)] == [1]
    assert ("https://twitter.com/", "watch", "blocked") in second.reading().targets


async def test_confirmed_but_unwritten_change_survives_a_crash(
        tmp_path: Path, make_alerts: MakeAlerts) -> None:
    """A draft saved by another group's sweep end is written after a restart, once."""
    config = alerts_config(tmp_path)
    first = await make_alerts(config)
    first.observe(blocked(sweep="w1"))
    first.observe(blocked(sweep="w2"))
    await first.sweep_finished("default", "d1", records=0)  # saves the state with the draft
    state = (tmp_path / STATE_FILE).read_bytes()
    await first.aclose(1.0)  # writes the draft
    assert len(read_events(tmp_path)) == 1
    for path in event_logs(tmp_path):
        path.unlink()  # as if killed before the draft's sweep ended
    (tmp_path / STATE_FILE).write_bytes(state)
    await make_alerts(config)
    await make_alerts(config)  # a second restart does not write it again
    assert [e["kind"] for e in read_events(tmp_path)] == ["blocked"]


async def test_torn_last_line_is_cut_at_start(tmp_path: Path, make_alerts: MakeAlerts) -> None:
    """A partial last line (kill -9 mid-write) is cut; the next event appends cleanly."""
    config = alerts_config(tmp_path)
    first = await make_alerts(config)
    await sweep(first, [blocked()], "s1")
    await sweep(first, [blocked()], "s2")
    await first.aclose(1.0)
    (path,) = event_logs(tmp_path)
    append_bytes(path, b'{"event_version": 1, "seq": 2, "kind": "unbl')
    second = await make_alerts(config)
    await sweep(second, [ok()], "s3")
    await sweep(second, [ok()], "s4")
    assert [(e["seq"], e["kind"]) for e in read_events(tmp_path)] == [(1, "blocked"),
                                                                      (2, "unblocked")]


def test_state_file_is_replaced_atomically(tmp_path: Path) -> None:
    """write_json leaves the new content, no temporary file, and survives a stale temp."""
    target = tmp_path / "x.json"
    (tmp_path / ".x.json.tmp").write_bytes(b"stale")
    journal.write_json(target, {"a": 1})
    journal.write_json(target, {"a": 2})
    assert orjson.loads(target.read_bytes()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    target.write_bytes(b"{broken")
    assert journal.read_json(target) is None


def test_read_after_reads_only_what_is_needed(tmp_path: Path) -> None:
    """Events above a seq across days, the newest ``keep``, and the count left out."""
    journal.append(tmp_path, [{"seq": 1}, {"seq": 2}], 0.0)
    journal.append(tmp_path, [{"seq": 3}, {"seq": 4}], 86400.0)
    found, left = journal.read_after(tmp_path, 1, keep=2)
    assert [e["seq"] for e in found] == [3, 4] and left == 1
    assert journal.last_seq(tmp_path) == 4


async def test_events_made_elsewhere_share_the_log(tmp_path: Path,
                                                   make_alerts: MakeAlerts) -> None:
    """emit(): a network event gets the next seq and an id in the same log."""
    alerts = await make_alerts(alerts_config(tmp_path))
    await sweep(alerts, [blocked()], "s1")
    await sweep(alerts, [blocked()], "s2")
    await alerts.emit([{"kind": "outage", "input": None, "scope": "network",
                        "probe_asn": "AS9198", "probe_id": "vps1", "at": "2026-12-07T14:00:00Z",
                        "from": {"state": "online", "interference": []},
                        "to": {"state": "full_outage", "interference": []}}])
    events = read_events(tmp_path)
    assert [(e["seq"], e["kind"]) for e in events] == [(1, "blocked"), (2, "outage")]
    assert events[1]["event_id"].startswith("vps1-2-") and events[1]["scope"] == "network"


async def test_unreadable_directory_does_not_stop_alerting(tmp_path: Path,
                                                         make_alerts: MakeAlerts) -> None:
    """An output dir that is a file: start, sweeps and close log errors and never raise."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    alerts = await make_alerts(alerts_config(blocker))
    await sweep(alerts, [blocked()], "s1")
    await sweep(alerts, [blocked()], "s2")
    assert alerts.seq == 0 and alerts.reading().changes == tuple(
        (kind, 0) for kind in ("blocked", "unblocked", "mechanism_changed", "down", "up"))


def test_last_event_of_a_scope_is_the_newest_across_days(tmp_path: Path) -> None:
    day = 86400.0
    journal.append(tmp_path, [{"seq": 1, "scope": "network", "kind": "outage"},
                              {"seq": 2, "scope": "target"}], 0.0)
    journal.append(tmp_path, [{"seq": 3, "scope": "target"}], day)
    assert journal.last_event(tmp_path, "network") == {"seq": 1, "scope": "network",
                                                       "kind": "outage"}
    journal.append(tmp_path, [{"seq": 4, "scope": "network", "kind": "recovered"},
                              {"seq": 5, "scope": "target"}], 2 * day)
    assert journal.last_event(tmp_path, "network")["kind"] == "recovered"  # type: ignore[index]
    assert journal.last_event(tmp_path / "none", "network") is None
    assert journal.last_event(tmp_path, "network", days=1)["seq"] == 4  # type: ignore[index]


async def test_state_file_is_rewritten_only_when_the_tracker_changed(
        tmp_path: Path, make_alerts: MakeAlerts) -> None:
    """A sweep that confirms what was known rewrites nothing; a new candidate does."""
    alerts = await make_alerts(alerts_config(tmp_path))
    state = tmp_path / STATE_FILE
    await sweep(alerts, [ok()], "s1")
    await sweep(alerts, [ok()], "s2")  # "ok" confirmed
    written = state.read_bytes()
    state.unlink()
    await sweep(alerts, [ok()], "s3")  # the same state again: the file would say the same
    assert not state.exists()
    await sweep(alerts, [blocked()], "s4")  # a candidate block: a restart must know of it
    assert state.exists() and state.read_bytes() != written
