"""The lab's own plumbing: names, egress guard, stale cleanup, teardown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from . import netns, topology
from .conftest import require_lab
from .topology import SITES, Names

pytestmark = pytest.mark.lab


def test_names_are_unique_and_short() -> None:
    """Two runs get different namespaces, and every veth name fits IFNAMSIZ (15 chars)."""
    a, b = Names.fresh(), Names.fresh()
    assert set(a.all).isdisjoint(b.all)
    for end in ("c", "rc", "ri", "i"):
        assert len(a.veth(end)) <= 15
    assert all(ns.startswith(netns.PREFIX) for ns in a.all)
    assert netns.owner_pid(a.client) == a.pid


def test_site_addresses_stay_in_the_lab_range() -> None:
    """Every site address is inside 198.18.0.0/15 and no name contains another."""
    import ipaddress

    lab_net = ipaddress.ip_network(netns.LAB_NET)
    assert all(ipaddress.ip_address(s.ip) in lab_net for s in SITES)
    hosts = [s.ascii_host for s in SITES]
    assert not [(x, y) for x in hosts for y in hosts if x != y and x in y]


def _scratch_namespace(name: str) -> None:
    """A sealed namespace: a veth pair with both ends inside, a default route into it."""
    netns.run(["ip", "netns", "add", name])
    netns.sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")
    netns.run(["ip", "link", "add", "kzlscr0", "netns", name, "type", "veth", "peer", "name",
               "kzlscr1", "netns", name])
    for argv in (["link", "set", "lo", "up"], ["link", "set", "kzlscr0", "up"],
                 ["link", "set", "kzlscr1", "up"],
                 ["addr", "add", "198.18.9.1/24", "dev", "kzlscr0"],
                 ["route", "add", "default", "via", "198.18.9.2"]):
        netns.run(["ip", "-n", name, *argv])
    topology.install_egress_guard(name)


def test_egress_guard_counts_a_stray_packet() -> None:
    """A datagram for an outside address is rejected before any interface and counted."""
    require_lab()
    name = f"{netns.PREFIX}{Names.fresh().pid}-guard"
    try:
        _scratch_namespace(name)
        assert topology.egress_rejections(name) == 0
        netns.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                   "socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 9))"], ns=name, check=False)
        netns.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                   "socket.SOCK_DGRAM).sendto(b'x', ('198.18.9.2', 9))"], ns=name, check=False)
        assert topology.egress_rejections(name) == 1
    finally:
        netns.delete_namespace(name)


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    """cleanup_stale deletes kzl-<pid>-* namespaces whose pid is gone, and only those."""
    require_lab()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}{dead.pid}-dead00-cli"
    live = f"{netns.PREFIX}{Names.fresh().pid}-live00-cli"
    try:
        for ns in (stale, live):
            netns.run(["ip", "netns", "add", ns])
        removed = netns.cleanup_stale()
        remaining = netns.list_namespaces()
        assert stale in removed and stale not in remaining
        assert live in remaining
    finally:
        for ns in (stale, live):
            netns.delete_namespace(ns)


def test_build_and_teardown_leave_nothing() -> None:
    """A built topology forwards client->internet, and teardown removes every namespace."""
    require_lab()
    names = Names.fresh()
    try:
        topology.build(names)
        probe = netns.run([sys.executable, "-c", "import socket; s=socket.socket(); "
                           "s.settimeout(2); print(s.connect_ex(('198.18.2.10', 80)))"],
                          ns=names.client)
        assert probe.stdout.strip() == "111"  # ECONNREFUSED: routed to the site, nothing listens
        assert all(topology.egress_rejections(ns) == 0 for ns in names.all)
    finally:
        problems = topology.teardown(names)
    assert problems == []
    assert not set(names.all) & set(netns.list_namespaces())
