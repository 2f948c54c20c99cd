"""The NetworkMonitor with the real engine against loopback anchors switched mid-run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kzprobe.alerts.events import number
from kzprobe.config import Config
from kzprobe.engine import Engine
from kzprobe.measure.resources import build_resources
from kzprobe.network import HelperProbe, NetworkMonitor, Transition, network_event
from kzprobe.network.state import (
    CONTROL_UNREACHABLE,
    DEGRADED,
    DNS_OUTAGE,
    FULL_OUTAGE,
    INTERNATIONAL_OUTAGE,
    ONLINE,
)
from kzprobe.verdict.pipeline import Pipeline
from tests.conftest import make_config
from tests.servers import DnsServer

from .switches import HELLO, Switch

FAST = {"interval": 0.2, "recheck": 0.1, "confirm": 2, "recover": 2}


@dataclass
class Net:
    """A loopback 'country': two anchors per scope, a resolver and a control helper."""

    dns: DnsServer
    dom_tcp: Switch = field(default_factory=Switch)
    dom_web: Switch = field(default_factory=Switch)
    intl_tcp: Switch = field(default_factory=Switch)
    intl_web: Switch = field(default_factory=Switch)
    helper: Switch = field(default_factory=lambda: Switch(HELLO))

    @property
    def switches(self) -> list[Switch]:
        return [self.dom_tcp, self.dom_web, self.intl_tcp, self.intl_web, self.helper]

    def anchors(self) -> list[dict[str, str]]:
        return [
            {"target": "resolvers", "scope": "domestic"},
            {"target": f"tcp://127.0.0.1:{self.dom_tcp.port}", "scope": "domestic"},
            {"target": f"http://dom.test:{self.dom_web.port}/", "scope": "domestic"},
            {"target": f"tcp://127.0.0.1:{self.intl_tcp.port}", "scope": "international"},
            {"target": f"http://intl.test:{self.intl_web.port}/", "scope": "international"},
        ]

    def dns_silent(self, silent: bool) -> None:
        for name in ("dom.test", "intl.test"):
            if silent:
                self.dns.faults[name] = "silent"
            else:
                self.dns.faults.pop(name, None)


@pytest.fixture
async def net(dns_server: DnsServer) -> AsyncIterator[Net]:
    dns_server.zone.update({"dom.test": ["127.0.0.1"], "intl.test": ["127.0.0.1"]})
    world = Net(dns=dns_server)
    for switch in world.switches:
        await switch.on()
    yield world
    for switch in world.switches:
        await switch.off()


def monitor_config(net: Net, tmp_path: Path, **network: Any) -> Config:
    return make_config(dns=net.dns, tmp=tmp_path,
                       timeouts={"dns": 0.5, "connect": 0.5, "http": 2.0, "measurement": 5.0},
                       analysis={"retries": 0, "worker_process": False},
                       network={**FAST, "anchors": net.anchors(), **network})


@dataclass
class Watch:
    monitor: NetworkMonitor
    engine: Engine
    helper: HelperProbe
    changes: list[Transition] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    async def expect(self, state: str, timeout: float = 15.0) -> Transition:
        """The next confirmed change, which must lead to ``state``."""
        seen = len(self.changes)
        async with asyncio.timeout(timeout):
            while len(self.changes) == seen:
                await self.monitor.wait_change(timeout)
        change = self.changes[seen]
        assert change.to_state == state, [c.to_state for c in self.changes[seen:]]
        return change


@contextlib.asynccontextmanager
async def started(config: Config, net: Net) -> AsyncIterator[Watch]:
    """A monitor on the real engine, its loop running, collecting changes and records."""
    engine = Engine(build_resources(config), Pipeline(config), _no_emit)
    await engine.start()
    helper = HelperProbe([f"http://127.0.0.1:{net.helper.port}/"], timeout=1.0)
    watch: Watch

    async def on_change(change: Transition) -> None:
        watch.changes.append(change)

    async def on_record(record: dict[str, Any]) -> None:
        watch.records.append(record)

    monitor = NetworkMonitor(config, engine.measure, helper=helper, on_record=on_record,
                             on_transition=on_change)
    watch = Watch(monitor, engine, helper)
    task = asyncio.create_task(monitor.run())
    try:
        yield watch
    finally:
        monitor.stop()
        await asyncio.wait_for(task, 30)
        await helper.aclose()
        await engine.aclose()


async def _no_emit(record: dict[str, Any]) -> None:
    """Anchor measurements are never emitted by the engine itself."""


@pytest.fixture
async def watch(net: Net, tmp_path: Path) -> AsyncIterator[Watch]:
    async with started(monitor_config(net, tmp_path), net) as w:
        yield w


async def test_every_state_switched_on_and_off_in_one_run(net: Net, watch: Watch) -> None:
    """International, full, DNS and control outages, each on and then off mid-run: exactly
    one event into each state and one recovery after it, nothing else."""
    snap = await watch.monitor.check_now()
    assert snap.state == ONLINE and snap.check_id is not None
    steps = [
        (INTERNATIONAL_OUTAGE, [net.intl_tcp, net.intl_web, net.helper], False),
        (FULL_OUTAGE, net.switches, True),
        (DNS_OUTAGE, [], True),
        (CONTROL_UNREACHABLE, [net.helper], False),
    ]
    for state, cut, dns_dead in steps:
        for switch in cut:
            await switch.off()
        net.dns_silent(dns_dead)
        change = await watch.expect(state)
        assert watch.monitor.state == state and change.kind == "outage"
        for switch in cut:
            await switch.on()
        net.dns_silent(False)
        back = await watch.expect(ONLINE)
        assert back.kind == "recovered" and back.from_state == state
    assert [c.to_state for c in watch.changes] == [
        INTERNATIONAL_OUTAGE, ONLINE, FULL_OUTAGE, ONLINE, DNS_OUTAGE, ONLINE,
        CONTROL_UNREACHABLE, ONLINE]


async def test_anchor_records_are_grouped_and_flagged(net: Net, watch: Watch) -> None:
    """Anchor records go out as records of group "anchors", stamped with the round; in an
    outage the failed ones say x_outage."""
    await watch.monitor.check_now()
    first = watch.records[:4]
    assert {r["annotations"]["kzprobe_group"] for r in first} == {"anchors"}
    assert all(r["x_network_state"] == ONLINE for r in first)
    await net.intl_tcp.off()
    await net.intl_web.off()
    await net.helper.off()
    await watch.expect(INTERNATIONAL_OUTAGE)
    await watch.monitor.check_now()
    latest = watch.records[-4:]
    failed = [r for r in latest if r["input"].startswith(("tcp://127.0.0.1:"
                                                          f"{net.intl_tcp.port}",
                                                          "http://intl.test"))]
    assert len(failed) == 2 and all(r.get("x_outage") is True for r in failed)
    assert all(r["x_network_check"] == watch.monitor.check_id for r in latest)


async def test_check_now_settles_a_pending_change(net: Net, watch: Watch) -> None:
    """Right before a sweep: one call returns a confirmed state, not a half-seen one."""
    await watch.monitor.check_now()
    for switch in net.switches:
        await switch.off()
    net.dns_silent(True)
    snap = await watch.monitor.check_now()
    assert snap.state == FULL_OUTAGE and snap.pending is None and snap.outage
    assert snap.rate_factor == pytest.approx(0.1)
    for switch in net.switches:
        await switch.on()
    net.dns_silent(False)
    assert await watch.monitor.wait_online(timeout=15)
    assert watch.monitor.snapshot().rate_factor == 1.0


async def test_degraded_when_the_anchors_slow_down(net: Net, tmp_path: Path) -> None:
    """Both web anchors answering 0.8 s late after a fast baseline: degraded, then back."""
    anchors = [a for a in net.anchors() if a["target"].startswith("http")]
    config = monitor_config(net, tmp_path, anchors=anchors, degraded_min_seconds=0.3)
    async with started(config, net) as watch:
        for _ in range(4):  # the baseline
            await watch.monitor.check_now()
        assert watch.changes == []
        net.dom_web.delay = net.intl_web.delay = 0.8
        change = await watch.expect(DEGRADED)
        assert change.kind == "degraded" and set(change.slow) == {a["target"] for a in anchors}
        net.dom_web.delay = net.intl_web.delay = 0.0
        await watch.expect(ONLINE)


async def test_event_shape(net: Net, watch: Watch) -> None:
    """A confirmed change as the event log's object (SPEC16 envelope, scope network)."""
    await net.helper.off()
    change = await watch.expect(CONTROL_UNREACHABLE)
    config = watch.monitor.config
    event = network_event(change, probe=config.probe, probe_id="vps1")
    assert event["kind"] == "outage" and event["input"] is None
    assert event["scope"] == "network" and event["probe_id"] == "vps1"
    numbered = number(event, 7)  # as the alerts service writes it
    assert numbered["event_id"].startswith("vps1-7-") and numbered["seq"] == 7
    assert event["from"] == {"state": ONLINE, "interference": []}
    assert event["to"] == {"state": CONTROL_UNREACHABLE, "interference": []}
    assert {"anchor": "control helper", "scope": "international",
            "failure": "connection_refused", "check": change.check_id} in event["evidence"]
    assert event["at"].endswith("Z") and event["confirmed_at"] >= event["at"]
    assert "control helper unreachable on AS0" in event["summary"]
