"""Outages in the namespace lab, real packets: the NetworkMonitor alone (issue 17).

One monitor run per test (``tests/network/lab_runner.py`` in the client namespace), faults
switched on and off on the router mid-run: all forwarded traffic dropped and the router
unreachable (full outage), everything dropped but a "domestic" address (international
outage), the ISP resolver silent for every name (DNS outage), the helper alone dropped
(control unreachable), and the anchors slowed by the userspace delay relay (degraded).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from . import faults, topology
from .faults import COMMENT, Delay, Rule, divert, reload_isp_rules
from .lab import Lab
from .netns import LabError, iptables
from .services import REPO_ROOT, lab_env

pytestmark = pytest.mark.lab
RUNNER = REPO_ROOT / "tests" / "network" / "lab_runner.py"
DOMESTIC = "198.18.2.10"  # open.lab.test: the one "domestic" address in the internet namespace
NETWORK = {"interval": 0.5, "recheck": 0.25, "confirm": 2, "recover": 2}
# The helper is a lab process next door: a round in an outage that cuts it lasts this long
# (the lab's 5 s would make every outage round, so every window, 2.5 times as long).
CONTROL_TIMEOUT = 2.0


@dataclass
class Run:
    """A running monitor in the client namespace and the lines it printed."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def start_reader(self) -> None:
        def read(stream: IO[str]) -> None:
            for line in stream:
                if line.startswith("{"):
                    self.lines.put(json.loads(line))

        assert self.proc.stdout is not None
        threading.Thread(target=read, args=(self.proc.stdout,), daemon=True).start()

    def next_of(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(item)
            if item["type"] == kind:
                return item
        rounds = [(r["t"], r["raw"]) for r in self.seen if r["type"] == "round"]
        raise AssertionError(f"no {kind} within {timeout}s; rounds: {rounds[-8:]}; "
                             f"last lines: {self.seen[-8:]}")

    def expect(self, to: str, timeout: float = 60.0) -> dict[str, Any]:
        change = self.next_of("change", timeout)
        assert change["to"] == to, change
        return change

    def changes(self) -> list[tuple[str, str]]:
        return [(c["kind"], c["to"]) for c in self.seen if c["type"] == "change"]


@contextlib.contextmanager
def monitor(lab: Lab, tmp_path: Path, anchors: list[dict[str, str]],
            **timeouts: float) -> Iterator[Run]:
    config = lab.write_config(tmp_path, timeouts={**_lab_timeouts(), "control": CONTROL_TIMEOUT,
                                                  **timeouts},
                              analysis={"retries": 0, "worker_process": False})
    with config.open("a", encoding="utf-8") as out:
        out.write(_network_section(anchors))
    argv = ["ip", "netns", "exec", lab.names.client, sys.executable, str(RUNNER),
            str(config), "300"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=lab_env())
    run = Run(proc)
    run.start_reader()
    try:
        ready = run.next_of("ready", 60)
        assert ready["state"] == "online", ready
        yield run
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _network_section(anchors: list[dict[str, str]]) -> str:
    """``[network]`` with its anchors as inline tables (tomlw writes scalars and lists)."""
    entries = ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in a.items()) + " }"
                        for a in anchors)
    keys = "".join(f"{key} = {value!r}\n" for key, value in NETWORK.items())
    return f"\n[network]\n{keys}anchors = [{entries}]\n"


def _lab_timeouts() -> dict[str, float]:
    from .lab import LAB_TIMEOUTS
    return dict(LAB_TIMEOUTS)


def anchor_set(lab: Lab) -> list[dict[str, str]]:
    """Two anchors per scope, one by address and one by name each, and the ISP resolver."""
    return [
        {"target": "resolvers", "scope": "domestic"},
        {"target": f"tcp://{lab.blockpage_ip}:80", "scope": "domestic"},  # an ISP service
        {"target": lab.url("open"), "scope": "domestic"},
        {"target": f"tcp://{lab.sites['echo'].ip}:443", "scope": "international"},
        {"target": lab.url("proxied"), "scope": "international"},
    ]


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class InputDrop:
    """The router itself unreachable from the client (its resolver and services too)."""

    def _spec(self, lab: Lab) -> tuple[str, ...]:
        return ("-s", lab.client_ip, "-j", "DROP", *COMMENT)

    def install(self, lab: Lab) -> None:
        iptables(lab.names.router, "-I", "INPUT", "1", *self._spec(lab))

    def remove(self, lab: Lab) -> None:
        iptables(lab.names.router, "-D", "INPUT", *self._spec(lab), check=False)

    def describe(self) -> str:
        return "router INPUT from the client dropped"


@dataclass(frozen=True, slots=True)
class SilentResolver:
    """The ISP resolver drops every query (its default rule ``silent``), verified."""

    def install(self, lab: Lab) -> None:
        lab.isp_default = "silent"
        reload_isp_rules(lab)
        _until_dns(lab, answered=False)

    def remove(self, lab: Lab) -> None:
        lab.isp_default = f"forward:{topology.INTERNET_IP}:53"
        reload_isp_rules(lab)
        _until_dns(lab, answered=True)

    def describe(self) -> str:
        return "ISP resolver silent for every name"


def _until_dns(lab: Lab, *, answered: bool) -> None:
    host = lab.sites["open"].ascii_host
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = lab.raw("dns", host, "--server", lab.resolver_ip, timeout=0.5)
        if (got.get("error") != "TimeoutError") == answered:
            return
        time.sleep(0.05)
    raise LabError(f"ISP resolver did not become {'answering' if answered else 'silent'}")


FORWARD_ALL = Rule(("-j", "DROP"))


def _international_cut() -> list[Any]:
    return [Rule(("-s", DOMESTIC, "-j", "RETURN")), Rule(("-d", DOMESTIC, "-j", "RETURN")),
            FORWARD_ALL]


def _helper_cut() -> list[Any]:
    return [Rule(("-d", topology.HELPER_IP, "-j", "DROP")),
            Rule(("-s", topology.HELPER_IP, "-j", "DROP"))]


@contextlib.contextmanager
def applied(lab: Lab, *fault_list: Any, standing: bool = False) -> Iterator[None]:
    """Install faults (each verified where it can be), yield, remove exactly those, prove
    clean (``standing``: other scenarios stay on, so only the router's INPUT is checked)."""
    done: list[Any] = []
    try:
        for fault in fault_list:
            fault.install(lab)
            done.append(fault)
        yield
    finally:
        for fault in reversed(done):
            fault.remove(lab)
        if not standing:
            faults.assert_clean(lab)
        rules = iptables(lab.names.router, "-S", "INPUT").stdout
        assert "kzl-fault" not in rules, rules


def _need_control(lab: Lab) -> None:
    if lab.control_url is None:
        pytest.skip(f"no control helper in the lab: {lab.control_missing}")


# --------------------------------------------------------------------------- tests


def test_outages_switched_on_and_off_in_one_run(lab: Lab, tmp_path: Path) -> None:
    """Each outage on mid-run and off again: exactly its event, then one recovery."""
    _need_control(lab)
    steps = [
        ("full_outage", [FORWARD_ALL, InputDrop()]),
        ("international_outage", _international_cut()),
        ("dns_outage", [SilentResolver()]),
        ("control_unreachable", _helper_cut()),
    ]
    with monitor(lab, tmp_path, anchor_set(lab)) as run:
        for state, fault_list in steps:
            with applied(lab, *fault_list):
                change = run.expect(state)
                assert change["kind"] == "outage" and change["frm"] == "online"
            back = run.expect("online")
            assert back["kind"] == "recovered" and back["frm"] == state
        assert run.changes() == [(kind, to) for state, _ in steps
                                 for kind, to in (("outage", state), ("recovered", "online"))]


def test_outage_records_are_flagged(lab: Lab, tmp_path: Path) -> None:
    """During an international outage the failing anchors' records say x_outage; the
    domestic ones are observations (reached), and the evidence names the cut anchors."""
    _need_control(lab)
    anchors = anchor_set(lab)
    with monitor(lab, tmp_path, anchors) as run:
        with applied(lab, *_international_cut()):
            change = run.expect("international_outage")
            intl = {a["target"] for a in anchors if a["scope"] == "international"}
            assert intl <= set(change["down"]) and "control helper" in change["down"]
            records = [run.next_of("record", 30) for _ in range(len(anchors) - 1)]
            assert {r["state"] for r in records} == {"international_outage"}
            flagged = {r["input"] for r in records if r["outage"]}
            assert flagged == intl
        run.expect("online")


def test_up_down_up_windows_do_not_flap(lab: Lab, tmp_path: Path) -> None:
    """A 3-hour-style cut compressed to seconds, with one lost round before it: one outage,
    one recovery, nothing from the single lost round."""
    _need_control(lab)
    with monitor(lab, tmp_path, anchor_set(lab)) as run:
        with applied(lab, *_international_cut()):  # one round sees it: below confirm = 2
            lost = run.next_of("round", 20)
            while lost["raw"] == "online":
                lost = run.next_of("round", 20)
        time.sleep(NETWORK["interval"] * 4)
        with applied(lab, *_international_cut()):
            run.expect("international_outage")
            time.sleep(NETWORK["interval"] * 4)
        run.expect("online")
        time.sleep(NETWORK["interval"] * 4)
        _drain(run)
        assert run.changes() == [("outage", "international_outage"), ("recovered", "online")], \
            lost


def _drain(run: Run) -> None:
    with contextlib.suppress(AssertionError):
        while True:
            run.next_of("__none__", 0.2)


def test_slow_anchors_are_degraded(lab: Lab, tmp_path: Path) -> None:
    """Both anchors slowed by the router's userspace relay (TLS held 2 s; the body capped
    at 32 KiB/s) after a fast baseline: degraded, then recovered once the relay is gone."""
    anchors = [{"target": lab.url("tls_delay"), "scope": "domestic"},
               {"target": lab.url("throttle", "http"), "scope": "international"}]
    slow = [Delay(lab.sites["tls_delay"].ip, faults.DELAY_SECONDS),
            divert(lab, lab.sites["throttle"].ip, 80, "filter")]
    with monitor(lab, tmp_path, anchors, tls=6.0, http=10.0, measurement=30.0) as run:
        for _ in range(4):  # a baseline of normal rounds
            run.next_of("round", 20)
        with applied(lab, *slow):
            change = run.expect("degraded", timeout=60)
            assert change["kind"] == "degraded" and set(change["slow"]) == \
                {a["target"] for a in anchors}
        run.expect("online", timeout=60)
