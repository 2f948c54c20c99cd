"""Records that fail at the edges of an outage: while it waits for confirmation, and when
they began before the way back was first seen. Judged by that outage (``x_outage``), or a
DNS outage (the control still works) would give each site a "blocked" sighting at its
start and another at its end: two agreeing sightings, a confirmed ``blocked`` event."""

from __future__ import annotations

import copy
from typing import Any

from kzprobe.config import Config
from kzprobe.config.model import Anchor, NetworkConfig
from kzprobe.network import NetworkMonitor
from kzprobe.network.state import DNS_OUTAGE, ONLINE
from kzprobe.targets import Target
from kzprobe.verdict.analyzer import Analyzer
from tests.verdict.analysis import scenarios as sc

NAMED, BY_ADDRESS = "tcp://anchor.test:443", "tcp://127.0.0.1:443"


class Anchors:
    """Scripted anchor records: the resolvers answer or not; the address anchor works."""

    def __init__(self) -> None:
        self.resolvers = True
        self.now = 1_000_000.0

    def clock(self) -> float:
        self.now += 1.0
        return self.now

    async def measure(self, target: Target) -> dict[str, Any]:
        if target.input == BY_ADDRESS:
            keys: dict[str, Any] = {"reachable": True, "failure": None}
        elif self.resolvers:
            keys = {"reachable": True, "failure": None, "queries": [{"failure": None}]}
        else:
            keys = {"reachable": False, "failure": "generic_timeout_error",
                    "failed_operation": "resolve",
                    "queries": [{"failure": "generic_timeout_error"}]}
        return {"input": target.input, "test_keys": keys}


def monitor(anchors: Anchors) -> NetworkMonitor:
    network = NetworkConfig(confirm=2, recover=2, recheck=0.0, anchors=(
        Anchor(target="resolvers", scope="domestic"),
        Anchor(target=NAMED, scope="domestic"),
        Anchor(target=BY_ADDRESS, scope="international")))
    return NetworkMonitor(Config(network=network), anchors.measure, clock=anchors.clock)


def lookup_failure(runtime: float) -> dict[str, Any]:
    """A site whose lookup timed out, the control fine: "blocked" (dns.timeout) as judged."""
    scenario = sc.dns_failure("generic_timeout_error", "dns.timeout")
    keys = copy.deepcopy(scenario.keys)
    Analyzer(Config()).apply(keys, scenario.url)
    assert keys["interference"] == ["dns.timeout"]
    return {"input": scenario.url, "test_keys": keys, "test_runtime": runtime}


async def test_a_failure_while_the_outage_waits_for_confirmation() -> None:
    anchors = Anchors()
    watch = monitor(anchors)
    await watch.check_now(settle=False)
    anchors.resolvers = False
    await watch.check_now(settle=False)  # one round: pending, not confirmed
    assert watch.state == ONLINE and watch.machine.candidate == DNS_OUTAGE
    record = watch.flag(lookup_failure(runtime=1.0))
    assert record["x_outage"] is True and record["x_network_state"] == DNS_OUTAGE
    assert record["x_network_check"] == watch.machine.candidate_check
    assert record["test_keys"]["interference"] == []
    anchors.resolvers = True
    await watch.check_now(settle=False)  # rejected: a blip
    assert "x_outage" not in watch.flag(lookup_failure(runtime=1.0))


async def test_a_failure_that_began_before_the_recovery() -> None:
    anchors = Anchors()
    watch = monitor(anchors)
    anchors.resolvers = False
    await watch.check_now()
    assert watch.state == DNS_OUTAGE
    outage_check = watch.check_id
    anchors.resolvers = True
    await watch.check_now()
    assert watch.state == ONLINE
    began_before = watch.flag(lookup_failure(runtime=30.0))
    assert began_before["x_outage"] is True and began_before["x_network_state"] == DNS_OUTAGE
    assert began_before["x_network_check"] == outage_check
    after = watch.flag(lookup_failure(runtime=0.1))  # began once the way back was seen
    assert "x_outage" not in after and after["x_network_state"] == ONLINE
    assert after["test_keys"]["interference"] == ["dns.timeout"]
