"""Outages in the namespace lab, real packets, one real ``kzprobe run`` per scenario group
(issue 17 at the daemon level: ``kzprobe/ops/outages.py``).

The daemon runs in the client namespace with ``[network] anchors`` (domestic and
international lab hosts, the ISP resolver, the control helper), a watch group of lab sites
(two of them really blocked all along: an SNI reset and an HTTP blockpage), a default group
on a long interval, and ``[alerts]`` with a webhook receiver next to it. Each outage is
switched on mid-run on the router and off again; afterwards the test reads the event log,
the webhook's bodies and every record: the right network events, no per-target event
caused by an outage (the blocked sites keep their state, self-proving evidence is still
reported), records flagged, sweeps during an outage at ``[network] outage_rate``, and a
full sweep of every group at once after the recovery.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kzprobe.verdict import outcome as outcomes
from kzprobe.verdict.outcome import outcome

from . import faults, topology
from .faults import Delay, Rule, divert
from .lab import Lab
from .labdaemon import Event, LabDaemon, extra_sections, running
from .test_lab_outage import CONTROL_TIMEOUT, FORWARD_ALL, InputDrop, SilentResolver, applied

pytestmark = pytest.mark.lab
OUTAGES = ("full_outage", "international_outage", "dns_outage")
RATE, OUTAGE_RATE = 10.0, 0.1  # [limits] rate (burst 1) and [network] outage_rate
AFTER_RECOVERY = 15.0  # seconds: every target measured this soon after `recovered`
NETWORK = {"interval": 1.0, "recheck": 0.5, "confirm": 2, "recover": 2,
           "outage_rate": OUTAGE_RATE}
Record = dict[str, Any]


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Sites:
    """The targets, by role."""

    watch: list[str]
    default: list[str]
    blocked: dict[str, str]  # input -> the interference code that proves its block
    domestic: list[str]  # addresses an international cut leaves reachable

    @property
    def all(self) -> list[str]:
        return self.watch + self.default


def sites(lab: Lab) -> Sites:
    blocked = {lab.url("tls_rst"): "tls.reset", lab.url("http_blockpage", "http"):
               "http.blockpage"}
    return Sites(watch=[lab.url("open"), lab.url("echo", "http"), lab.url("idna"), *blocked],
                 default=[lab.url("open", "http"), lab.url("echo")], blocked=blocked,
                 domestic=[lab.sites["open"].ip, lab.sites["tls_rst"].ip])


def anchors(lab: Lab) -> list[dict[str, str]]:
    """Two anchors per scope (one by address, one by name) and the ISP resolver."""
    return [
        {"target": "resolvers", "scope": "domestic"},
        {"target": f"tcp://{lab.blockpage_ip}:80", "scope": "domestic"},  # an ISP service
        {"target": lab.url("open"), "scope": "domestic"},
        {"target": f"tcp://{lab.sites['echo'].ip}:443", "scope": "international"},
        {"target": lab.url("proxied"), "scope": "international"},
    ]


def write_config(lab: Lab, tmp_path: Path, targets: Sites, anchor_list: list[dict[str, str]],
                 **timeouts: float) -> Path:
    config = lab.write_config(
        tmp_path, timeouts={"control": CONTROL_TIMEOUT, **timeouts},
        analysis={"retries": 0, "worker_process": False},
        limits={"rate": RATE, "burst": 1, "concurrency": 16},
        schedule={"interval": 300.0, "jitter": 0.0},
        output={"store_bodies": "anomalous"},
        service={"metrics_listen": "", "shutdown_grace": 5.0},
        targets={"urls": targets.default})
    with config.open("a", encoding="utf-8") as out:
        out.write(extra_sections(network=NETWORK, anchors=anchor_list, hook="HOOK_URL",
                                 groups={"watch": (2.0, targets.watch)}))
    return config


# --------------------------------------------------------------------------- faults


def international_cut(domestic: list[str]) -> list[Rule]:
    """Every forwarded packet dropped except to and from the "domestic" addresses."""
    keep = [Rule((flag, ip, "-j", "RETURN")) for ip in domestic for flag in ("-s", "-d")]
    return [*keep, FORWARD_ALL]


def helper_cut() -> list[Rule]:
    return [Rule(("-d", topology.HELPER_IP, "-j", "DROP")),
            Rule(("-s", topology.HELPER_IP, "-j", "DROP"))]


@contextlib.contextmanager
def standing_censorship(lab: Lab, *names: str) -> Iterator[None]:
    """Scenarios that stay on for the whole run (the really blocked sites)."""
    catalog = faults.catalog(lab)
    done = []
    try:
        for name in names:
            catalog[name].install(lab)
            done.append(catalog[name])
        yield
    finally:
        for scenario in reversed(done):
            scenario.remove(lab)
        faults.assert_clean(lab)


# --------------------------------------------------------------------------- a window


@dataclass(frozen=True)
class Window:
    """One scenario switched on and off: its network event and the way back."""

    state: str
    down: Event
    up: Event
    paced: tuple[str, ...] = ()  # ids of the watch sweeps begun after the change was logged


def switch(d: LabDaemon, lab: Lab, state: str, fault_list: list[Any]) -> Window:
    """Faults on until the daemon says ``state`` and a watch sweep begun after it said so
    has ended (wholly measured in that state; in an outage, at the outage rate), off until
    it says ``online`` and, after an outage, every group was swept again."""
    seq = d.last_seq()
    with applied(lab, *fault_list, standing=True):  # the standing censorship stays
        down = d.network_change(state, seq)
        since = changed_at(d, state)
        paced = d.wait(lambda: [s["sweep"] for s in d.sweeps("watch") if started(s) >= since],
                       f"a watch sweep begun in {state}", timeout=90)
    up = d.network_change("online", down["seq"])
    if state in OUTAGES:
        back = unix(up["confirmed_at"]) - 1
        d.wait(lambda: all(any(started(s) >= back for s in d.sweeps(g))
                           for g in ("watch", "default")),
               "a sweep of every group after the recovery", timeout=AFTER_RECOVERY + 30)
    return Window(state, down, up, tuple(paced))


def logged(line: Event) -> float:
    """When the daemon logged ``line`` (its ``timestamp``, to the microsecond)."""
    stamp, _, fraction = str(line["timestamp"]).rstrip("Z").partition(".")
    return unix(stamp) + float(f"0.{fraction or 0}")


def started(sweep: Event) -> float:
    """When a logged ``sweep_finished`` began (its log time less its duration)."""
    return logged(sweep) - float(sweep["duration_s"])


def changed_at(d: LabDaemon, state: str) -> float:
    """When the daemon last logged its change into ``state``: an outage's rate is applied
    right after, before any later sweep starts."""
    return logged(d.wait(lambda: [e for e in d.log("network_state_changed")
                                  if e.get("state") == state], f"the log of {state}")[-1])


def blip(d: LabDaemon, lab: Lab, domestic: list[str]) -> None:
    """An international cut seen by one anchor round only, then gone."""
    seen = len(d.rounds())
    with applied(lab, *international_cut(domestic), standing=True):
        d.wait(lambda: any(r.get("raw") == "international_outage"
                           for r in d.rounds()[seen:]), "a round that saw the cut", 30)
    time.sleep(NETWORK["interval"] * 4)


# --------------------------------------------------------------------------- reading


def unix(text: str) -> float:
    """``2026-12-07 14:05:00`` or ``2026-12-07T14:05:00Z`` (UTC) -> Unix seconds."""
    return float(calendar.timegm(time.strptime(text.replace("T", " ").rstrip("Z"),
                                               "%Y-%m-%d %H:%M:%S")))


def read_records(out: Path) -> list[Record]:
    found = []
    for path in sorted(out.glob("kzprobe-*.ndjson")):
        data = path.read_text()
        assert not data or data.endswith("\n"), f"{path.name}: torn last line"
        found += [json.loads(line) for line in data.splitlines()]
    return found


def group_of(record: Record) -> str:
    return str(record["annotations"]["kzprobe_group"])


def targets_in(records: list[Record], state: str) -> list[Record]:
    return [r for r in records if group_of(r) != "anchors" and r["x_network_state"] == state]


def span(records: list[Record]) -> float:
    starts = [unix(r["measurement_start_time"]) for r in records]
    return max(starts) - min(starts)


# --------------------------------------------------------------------------- checks


def check_events(d: LabDaemon, targets: Sites, windows: list[Window]) -> None:
    """Network events as switched; per-target events only the standing blocks' first."""
    expected = [(kind, state) for w in windows
                for kind, state in ((w.down["kind"], w.state), ("recovered", "online"))]
    got = [(e["kind"], e["to"]["state"]) for e in d.network_events()]
    assert got == expected, got
    for w in windows:
        assert w.down["kind"] == ("outage" if w.state != "degraded" else "degraded")
        assert w.down["input"] is None and w.down["from"]["state"] == "online"
        assert w.up["from"]["state"] == w.state and w.down["evidence"], w.down
    per_target = [(e["kind"], e["input"]) for e in d.target_events()]
    assert sorted(per_target) == sorted(("blocked", url) for url in targets.blocked), \
        per_target
    ids = {e["event_id"] for e in d.events()}
    d.wait(lambda: ids <= {p.get("event_id") for p in d.posted()}, "every event posted", 30)
    posted = [(p["kind"], p.get("input")) for p in d.posted() if p.get("scope") != "network"]
    assert sorted(posted) == sorted(per_target), posted


def failed(record: Record) -> bool:
    """A per-site failure or anomaly (what an outage might explain), not a success."""
    return outcome(record) in (outcomes.FAILURE, outcomes.ANOMALY)


def check_flags(records: list[Record], targets: Sites, window: Window) -> None:
    """Records in the outage: stamped, and x_outage where the outage explains a failure (a
    success while the recovery waits for confirmation is an observation); a standing block
    is still reported where its evidence proves itself."""
    during = targets_in(records, window.state)
    assert during, f"no target record measured in {window.state}"
    assert all(isinstance(r["x_network_check"], str) for r in during)
    outaged = {r["input"] for r in during if r.get("x_outage")}
    for r in during:
        keys, url = r["test_keys"], r["input"]
        if r.get("x_outage"):
            assert keys["interference"] == [] and keys["blocking"] is None, url
            assert r["x_outage_dropped"], url
        elif window.state != "control_unreachable" and failed(r):
            proof = targets.blocked.get(url)
            assert window.state == "international_outage" and proof in keys["interference"], \
                (window.state, url, keys["interference"], keys["blocking"])
    if window.state == "control_unreachable":
        assert not outaged, outaged
        for url, code in targets.blocked.items():
            assert all(code in r["test_keys"]["interference"] for r in during
                       if r["input"] == url), url
        return
    assert outaged, f"no record set aside in {window.state}"
    if window.state == "international_outage":  # the domestic ones still measured
        kept = {r["input"]: r for r in during if not r.get("x_outage")}
        for url, code in targets.blocked.items():
            assert url in kept and code in kept[url]["test_keys"]["interference"], url
        sni = [r for r in during if targets.blocked.get(r["input"]) == "tls.reset"]
        assert all(r["test_keys"]["sni_blocking_confirmed"] is True for r in sni)


def check_rate(records: list[Record], targets: Sites, window: Window) -> None:
    """The watch sweeps begun once the outage was logged (the rate was lowered then): each
    wholly measured in the outage and paced at outage_rate, its starts spanning at least
    (n - 1) tokens at RATE * OUTAGE_RATE (second-resolution times: one second less)."""
    assert window.paced, f"no watch sweep begun in {window.state}"
    watch = [r for r in records if group_of(r) == "watch"]
    sweeps = [[r for r in watch if r["annotations"]["kzprobe_sweep"] == sweep]
              for sweep in window.paced]
    least = (len(targets.watch) - 1) / (RATE * OUTAGE_RATE) - 1
    assert all(len(rs) == len(targets.watch) for rs in sweeps)
    assert all(r["x_network_state"] == window.state for rs in sweeps for r in rs), window
    assert all(span(rs) >= least for rs in sweeps), [span(rs) for rs in sweeps]


def check_full_sweep(records: list[Record], targets: Sites, window: Window) -> None:
    """Every target of every group measured right after ``recovered`` (the default group's
    interval is 300 s: only the recovery makes it due)."""
    back = unix(window.up["confirmed_at"])
    soon = {r["input"] for r in records if group_of(r) != "anchors"
            and back - 1 <= unix(r["measurement_start_time"]) <= back + AFTER_RECOVERY}
    assert set(targets.all) <= soon, sorted(set(targets.all) - soon)


def check_anchor_records(records: list[Record], anchor_list: list[dict[str, str]],
                         out: Path) -> None:
    """Anchor records written with their round; no target of the alerts (``open`` https is
    an anchor and a watched target: its entry is the watch group's)."""
    state = json.loads((out / "alerts-state.json").read_text())
    assert all(entry["group"] != "anchors" for entry in state["entries"]), state["entries"]
    mine = [r for r in records if group_of(r) == "anchors"]
    names = {a["target"] for a in anchor_list if a["target"] != "resolvers"}
    assert {r["input"] for r in mine} >= {n for n in names if not n.startswith("tcp://")}
    assert all(isinstance(r["annotations"]["kzprobe_network_check"], str) for r in mine)
    assert all("x_network_state" in r for r in mine)


# --------------------------------------------------------------------------- tests


def _need_control(lab: Lab) -> None:
    if lab.control_url is None:
        pytest.skip(f"no control helper in the lab: {lab.control_missing}")


@pytest.mark.timeout(420)
def test_outages_in_one_daemon_run(lab: Lab, tmp_path: Path) -> None:
    """Full, international, DNS outage, the helper alone cut, and an up/down/up window
    with a one-round blip before it, all in one daemon run."""
    _need_control(lab)
    targets, anchor_list = sites(lab), anchors(lab)
    config = write_config(lab, tmp_path, targets, anchor_list)
    cut = international_cut(targets.domestic)
    steps = [("full_outage", [FORWARD_ALL, InputDrop()]),
             ("international_outage", cut),
             ("dns_outage", [SilentResolver()]),
             ("control_unreachable", helper_cut())]
    with standing_censorship(lab, "tls_rst", "http_blockpage"), \
            running(lab, config, tmp_path / "out", "outage") as d:
        d.wait(lambda: len(d.target_events()) >= len(targets.blocked),
               "the standing blocks' events", 60)
        windows = [switch(d, lab, state, faults_) for state, faults_ in steps]
        blip(d, lab, targets.domestic)
        windows.append(switch(d, lab, "international_outage", cut))
        check_events(d, targets, windows)
        assert d.stop() == 0
    records = read_records(tmp_path / "out")
    assert all("x_network_state" in r for r in records)
    check_anchor_records(records, anchor_list, tmp_path / "out")
    for window in windows:
        check_flags(records, targets, window)
        if window.state in OUTAGES:
            check_rate(records, targets, window)
            check_full_sweep(records, targets, window)


@pytest.mark.timeout(180)
def test_slow_anchors_degrade_the_daemon(lab: Lab, tmp_path: Path) -> None:
    """Every anchor slowed by the router's userspace relay: one ``degraded`` event, records
    stamped ``degraded`` and not set aside, no per-target event, then ``recovered``."""
    targets = Sites(watch=[lab.url("open"), lab.url("echo", "http")], default=[],
                    blocked={}, domestic=[])
    anchor_list = [{"target": "resolvers", "scope": "domestic"},
                   {"target": lab.url("tls_delay"), "scope": "domestic"},
                   {"target": lab.url("throttle", "http"), "scope": "international"}]
    slow = [Delay(lab.sites["tls_delay"].ip, faults.DELAY_SECONDS),
            divert(lab, lab.sites["throttle"].ip, 80, "filter")]
    config = write_config(lab, tmp_path, targets, anchor_list, tls=6.0, http=10.0,
                          measurement=30.0)
    with running(lab, config, tmp_path / "out", "degraded") as d:
        d.wait(lambda: len(d.rounds()) >= 5, "a baseline of anchor rounds", 60)
        window = switch(d, lab, "degraded", slow)
        assert set(window.down["slow"]) == {lab.url("tls_delay"), lab.url("throttle", "http")}
        check_events(d, targets, [window])
        assert d.stop() == 0
    faults.assert_clean(lab)
    records = read_records(tmp_path / "out")
    during = targets_in(records, "degraded")
    assert during and not any(r.get("x_outage") for r in during)
