"""The network monitor in a real daemon on loopback (``kzprobe/ops/outages.py``): anchors on
local servers the test switches off and on, a real control helper behind a relay the test
cuts with them (the helper counts as an international anchor), alerts with a webhook.

International anchors down -> one ``international_outage`` event (log and webhook), records
stamped and the failures set aside, no per-target event; back -> ``recovered`` and at once a
sweep of every group, the default one on a 300 s interval too. Anchor records are written
(group ``anchors``) but are no target of the alerts, even when a watched target has the same
input as an anchor.
"""

from __future__ import annotations

import asyncio
import calendar
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.network.switches import Relay, Switch
from tests.service.conftest import StartDaemon
from tests.service.harness import DaemonProcess, Site, daemon_config, read_segments
from tests.service.test_alert_pipeline import Receiver

pytestmark = pytest.mark.slow
AFTER_RECOVERY = 10.0  # seconds: every group swept this soon after `recovered`


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unix(text: str) -> float:
    return float(calendar.timegm(time.strptime(text.replace("T", " ").rstrip("Z"),
                                               "%Y-%m-%d %H:%M:%S")))


def _events(out: Path) -> list[dict[str, Any]]:
    found = [orjson.loads(line) for path in sorted(out.glob("events-*.ndjson"))
             for line in path.read_bytes().splitlines() if line.strip()]
    return sorted(found, key=lambda e: e["seq"])


async def _wait_network(daemon: DaemonProcess, out: Path, to: str,
                        timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in _events(out):
            if event.get("scope") == "network" and event["to"]["state"] == to:
                return event
        assert daemon.proc is not None and daemon.proc.returncode is None, daemon.stderr()
        await _sleep(0.1)
    raise AssertionError(f"no network event to {to}: {_events(out)}\n{daemon.stderr()}")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _helper(tmp: Path, start_daemon: StartDaemon, port: int) -> None:
    config = tmp / "helper.toml"
    config.write_text(f'[helper]\nlisten = "127.0.0.1:{port}"\nallow_nets = ["127.0.0.0/8"]\n'
                      'allowed_ports = ["1-65535"]\n', encoding="utf-8")
    helper = await start_daemon(config, command="helper")
    await helper.wait_event("helper_listening")


async def _network(tmp: Path, start_daemon: StartDaemon
                   ) -> tuple[Receiver, tuple[Relay, Switch, Switch]]:
    """A webhook receiver, and on: the control helper behind a relay, a domestic anchor
    and an international one."""
    receiver = Receiver()
    await receiver.start()
    helper_port = _free_port()
    await _helper(tmp, start_daemon, helper_port)
    relay, domestic, international = Relay(helper_port), Switch(), Switch()
    for server in (relay, domestic, international):
        await server.on()
    return receiver, (relay, domestic, international)


async def _off(receiver: Receiver, *servers: Switch) -> None:
    for server in servers:
        await server.off()
    assert receiver.runner is not None
    await receiver.runner.cleanup()


def _config(tmp: Path, site: Site, *, relay: int, domestic: str, international: str,
            hook: str, watch: list[str]) -> Path:
    config = daemon_config(
        tmp / "c.toml", urls=[site.url("/default")], out=tmp / "out",
        timeouts={"connect": 1.0, "http": 3.0, "control": 3.0, "measurement": 10.0},
        schedule={"interval": 300.0, "jitter": 0.0},
        control={"helper_url": f"http://127.0.0.1:{relay}/"})
    anchors = ", ".join(f'{{ target = "{url}", scope = "{scope}" }}' for url, scope in
                        ((domestic, "domestic"), (international, "international")))
    quoted = ", ".join(f'"{url}"' for url in watch)
    with config.open("a", encoding="utf-8") as out:
        out.write("[network]\ninterval = 0.5\nrecheck = 0.25\nconfirm = 2\nrecover = 2\n"
                  f"anchors = [{anchors}]\n"
                  f'[alerts]\nconfirm = 2\nwebhooks = [{{ url = "{hook}", format = "json" }}]\n'
                  f'[[targets.groups]]\nname = "watch"\ninterval = 1.0\nurls = [{quoted}]\n')
    return config


async def test_an_international_outage_in_a_running_daemon(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    receiver, (relay, domestic, international) = await _network(tmp_path, start_daemon)
    dom_url, intl_url = (f"http://127.0.0.1:{s.port}/" for s in (domestic, international))
    abroad = f"http://127.0.0.1:{international.port}/site"  # a target behind the cut
    watch = [site.url("/watch"), abroad, dom_url]  # dom_url: a target that is an anchor too
    out = tmp_path / "out"
    config = _config(tmp_path, site, relay=relay.port, domestic=dom_url,
                     international=intl_url, hook=receiver.url("/hook"), watch=watch)
    try:
        daemon = await start_daemon(config)
        await daemon.wait_event("sweep_finished", count=4, timeout=30)
        await international.off()
        await relay.off()
        down = await _wait_network(daemon, out, "international_outage")
        gauge = await daemon.metrics()
        assert gauge["kzprobe_network_state{state=international_outage}"] == 1
        assert gauge["kzprobe_network_state{state=online}"] == 0
        swept = len(daemon.events("sweep_finished"))
        await daemon.wait_event("sweep_finished", count=swept + 2, timeout=30)
        await relay.on()
        await international.on()
        up = await _wait_network(daemon, out, "online")
        await daemon.wait_event("network_recovered_full_sweep")
        ids = {e["event_id"] for e in _events(out)}
        await receiver.wait("/hook", lambda _: ids <= {p.get("event_id") for p in
                                                        receiver.posts.get("/hook", [])})
        await _sweep_after(daemon, "default", _unix(up["confirmed_at"]) - 1)
        assert await daemon.stop() == 0
    finally:
        await _off(receiver, relay, domestic, international)
    events = _events(out)
    assert [(e["kind"], e["to"]["state"]) for e in events] == [
        ("outage", "international_outage"), ("recovered", "online")], events
    assert down["input"] is None and {e["anchor"] for e in down["evidence"] if e["failure"]} \
        == {intl_url, "control helper"}
    records = [r for r in read_segments(out) if "test_keys" in r]
    _check_records(records, abroad, watch, up)
    _check_not_tracked(out, anchors={dom_url, intl_url}, watch=watch)


async def _sweep_after(daemon: DaemonProcess, group: str, since: float) -> None:
    """Until a sweep of ``group`` that started after ``since`` has finished."""
    deadline = time.monotonic() + AFTER_RECOVERY + 20
    while time.monotonic() < deadline:
        for sweep in daemon.events("sweep_finished"):
            stamp = str(sweep["timestamp"]).rstrip("Z").partition(".")[0]
            if sweep["group"] == group and _unix(stamp) + 1 - sweep["duration_s"] >= since:
                return
        await _sleep(0.1)
    raise AssertionError(f"no {group} sweep after the recovery: {daemon.stderr()}")


def _check_records(records: list[dict[str, Any]], abroad: str, watch: list[str],
                   up: dict[str, Any]) -> None:
    assert all(isinstance(r.get("x_network_state"), str) for r in records)
    during = [r for r in records if r["x_network_state"] == "international_outage"
              and r["annotations"]["kzprobe_group"] == "watch"]
    cut = [r for r in during if r["input"] == abroad]
    assert cut and all(r.get("x_outage") is True for r in cut), cut
    assert all(r["test_keys"]["blocking"] is None and r["x_outage_dropped"] for r in cut)
    assert all(isinstance(r["x_network_check"], str) for r in during)
    assert not any(r.get("x_outage") for r in during if r["input"] == watch[0])
    anchors = [r for r in records if r["annotations"]["kzprobe_group"] == "anchors"]
    assert anchors and all(r["annotations"]["kzprobe_network_check"] for r in anchors)
    back = _unix(up["confirmed_at"])
    soon = {(r["annotations"]["kzprobe_group"], r["input"]) for r in records
            if back - 1 <= _unix(r["measurement_start_time"]) <= back + AFTER_RECOVERY}
    default = next(r["input"] for r in records if r["annotations"]["kzprobe_group"] == "default")
    assert {("default", default)} | {("watch", url) for url in watch} <= soon, soon


def _check_not_tracked(out: Path, *, anchors: set[str], watch: list[str]) -> None:
    """The alerts track targets only: no anchor entry; the watched target that is also an
    anchor is the watch group's."""
    state = orjson.loads((out / "alerts-state.json").read_bytes())
    tracked = {(e["confirmed"] or e["candidate"][0])["input"]: e["group"]
               for e in state["entries"]}
    assert not any(group == "anchors" for group in tracked.values()), tracked
    assert tracked.get(watch[2]) == "watch" and not (anchors - set(watch)) & tracked.keys()


async def test_a_stop_while_the_anchors_are_checked_is_prompt(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """SIGTERM while the check right before the first sweep waits on an anchor that answers
    only after its 60 s timeout: the daemon stops at once, cleanly (it does not wait out the
    check, nor leave it running against a closed engine)."""
    slow = site.url("/slow?s=120")
    config = daemon_config(tmp_path / "c.toml", urls=[site.url("/target")], out=tmp_path / "out",
                           timeouts={"connect": 2.0, "http": 60.0, "measurement": 90.0})
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[network]\nanchors = [{{ target = "{site.url("/dom")}", scope = "domestic" }},'
                  f' {{ target = "{slow}", scope = "international" }}]\n')
    daemon = await start_daemon(config)
    await daemon.wait_event("daemon_ready")
    while site.hits("/slow") == 0:  # the check is under way
        await _sleep(0.05)
    began = time.monotonic()
    assert await daemon.stop(timeout=90) == 0
    took = time.monotonic() - began
    assert took < 30, f"stop took {took:.1f}s: {daemon.stderr()}"
    assert not daemon.events("sweep_finished")
    assert "Task was destroyed" not in daemon.stderr()


async def test_a_restart_during_an_outage_announces_it_once(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    """The daemon stops and starts again while the international anchors are still out: it
    resumes the outage from the event log (no second ``outage`` event, nor POST), and its
    end is one ``recovered`` event, from the outage state. (A live webhook: a dead one
    holds each stop for its retries.)"""
    receiver, (relay, domestic, international) = await _network(tmp_path, start_daemon)
    dom_url, intl_url = (f"http://127.0.0.1:{s.port}/" for s in (domestic, international))
    out = tmp_path / "out"
    config = _config(tmp_path, site, relay=relay.port, domestic=dom_url,
                     international=intl_url, hook=receiver.url("/hook"),
                     watch=[site.url("/watch")])
    try:
        daemon = await start_daemon(config)
        await daemon.wait_event("sweep_finished", timeout=30)
        await international.off()
        await relay.off()
        await _wait_network(daemon, out, "international_outage")
        assert await daemon.stop() == 0
        again = await start_daemon(config)
        resumed = await again.wait_event("network_state_resumed", timeout=30)
        assert resumed["state"] == "international_outage"
        await again.wait_event("sweep_finished", count=3, timeout=30)  # rounds still out
        gauge = await again.metrics()
        assert gauge["kzprobe_network_state{state=international_outage}"] == 1
        await relay.on()
        await international.on()
        await _wait_network(again, out, "online")
        assert await again.stop() == 0
    finally:
        await _off(receiver, relay, domestic, international)
    events = [e for e in _events(out) if e.get("scope") == "network"]
    assert [(e["kind"], e["from"]["state"], e["to"]["state"]) for e in events] == [
        ("outage", "online", "international_outage"),
        ("recovered", "international_outage", "online")], events
    posted = [p["event_id"] for p in receiver.posts.get("/hook", []) if p.get("scope") == "network"]
    assert posted == [e["event_id"] for e in events], receiver.posts
