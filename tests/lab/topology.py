"""The lab's shape: three namespaces on two veth links, every address in 198.18.0.0/15.

::

    client 198.18.1.2 --veth-- 198.18.1.1 router 198.18.2.1 --veth-- 198.18.2.2 internet (+ sites)

The router is the ISP (forwarding, ISP resolver, censorship); the internet namespace holds the
authoritative DNS, the web sites and the endpoint daemons (:data:`ENDPOINTS`). No route leads
out of 198.18.0.0/15, and an egress guard chain in every namespace rejects and counts anything
addressed elsewhere.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from . import netns
from .netns import EGRESS_CHAIN, LAB_NET, iptables, run

CLIENT_IP = "198.18.1.2"
ROUTER_CLIENT_IP = "198.18.1.1"  # client's gateway and ISP resolver
ROUTER_INTERNET_IP = "198.18.2.1"
INTERNET_IP = "198.18.2.2"  # authoritative DNS
HELPER_IP = "198.18.2.3"  # kzprobe's control helper (the vantage outside the censor)
BLOCKPAGE_IP = "198.18.1.80"  # the ISP's blockpage server (on the router)
PROXY_IP = "198.18.1.81"  # an honest transparent proxy (on the router)
FAULT_CHAIN = "KZL-FAULTS"  # router filter/FORWARD faults live here, flushed per scenario
NAT_CHAIN = "KZL-NAT"  # router nat/PREROUTING faults (REDIRECT/DNAT) live here


@dataclass(frozen=True, slots=True)
class Site:
    """One web site in the internet namespace: a DNS name on its own address."""

    key: str
    host: str  # Unicode form for IDNA names
    ip: str
    https: bool = True

    @property
    def ascii_host(self) -> str:
        """The name as it appears on the wire (punycode for IDNA names)."""
        return self.host.encode("idna").decode("ascii") if not self.host.isascii() else self.host


def _site(key: str, host: str, last_octet: int, *, https: bool = True) -> Site:
    return Site(key=key, host=host, ip=f"198.18.2.{last_octet}", https=https)


# Names are chosen so that no host is a substring of another: faults match them with
# `-m string`, and a substring match would leak a fault onto an innocent site.
SITES: tuple[Site, ...] = (
    _site("open", "open.lab.test", 10),
    _site("redirect", "hops.lab.test", 11),
    _site("large", "large.lab.test", 12),
    _site("idna", "қазақстан.lab.test", 13),
    _site("echo", "echo.lab.test", 14),
    _site("down", "down.lab.test", 15),
    _site("closed", "closed.lab.test", 16),
    _site("proxied", "proxied.lab.test", 17),
    _site("dns_nx", "nx.lab.test", 20),
    _site("dns_bogus", "bogus.lab.test", 21),
    _site("dns_blockpage", "dnsbp.lab.test", 22),
    _site("dns_silent", "silent.lab.test", 23),
    _site("dns_servfail", "servfail.lab.test", 24),
    _site("dns_empty", "empty.lab.test", 25),
    _site("syn_reject", "refused.lab.test", 30),
    _site("syn_drop", "dropped.lab.test", 31),
    _site("addr_rst", "addr-rst.lab.test", 32),
    _site("tls_rst", "tls-rst.lab.test", 40),
    _site("tls_blackhole", "tls-hole.lab.test", 41),
    _site("tls_fin", "tls-fin.lab.test", 42),
    _site("tls_delay", "tls-slow.lab.test", 43),
    _site("tls_mitm", "tls-mitm.lab.test", 44),
    _site("http_rst", "http-rst.lab.test", 50),
    _site("http_blackhole", "http-hole.lab.test", 51),
    _site("http_fin", "http-fin.lab.test", 52),
    _site("http_blockpage", "http-bp.lab.test", 53),
    _site("throttle", "crawl.lab.test", 54),
    _site("http_diff", "http-diff.lab.test", 55),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A non-web service in the internet namespace (a real daemon), on its own address."""

    key: str
    scheme: str  # the kzprobe endpoint URI scheme
    host: str
    ip: str
    port: int
    proto: str  # "tcp" | "udp": what the router's faults match
    daemon: str  # the binary that serves it ("simnet": kzprobe.simnet web)

    def uri(self, **params: str) -> str:
        """``scheme://host:port[?params]`` (lab values need no percent-encoding)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.scheme}://{self.host}:{self.port}" + (f"?{query}" if query else "")


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("openvpn_udp", "openvpn+udp", "vpn-udp.lab.test", "198.18.2.60", 1194, "udp",
             "openvpn"),
    Endpoint("openvpn_tcp", "openvpn+tcp", "vpn-tcp.lab.test", "198.18.2.61", 1194, "tcp",
             "openvpn"),
    Endpoint("tor", "tor", "relay.lab.test", "198.18.2.62", 9001, "tcp", "tor"),
    Endpoint("obfs4", "obfs4", "bridge.lab.test", "198.18.2.66", 4443, "tcp", "obfs4proxy"),
    Endpoint("stun", "stun", "stun.lab.test", "198.18.2.63", 3478, "udp", "turnserver"),
    Endpoint("wireguard", "wireguard", "wg.lab.test", "198.18.2.64", 51820, "udp",
             "wireguard-go"),
    Endpoint("tcp", "tcp", "chat.lab.test", "198.18.2.65", 5222, "tcp", "simnet"),
    Endpoint("tls", "tls", "chat.lab.test", "198.18.2.65", 5223, "tcp", "simnet"),
)


def zone(sites: tuple[Site, ...] = SITES,
         endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> dict[str, list[str]]:
    """Every wire name the lab's authoritative DNS serves, with its address."""
    names = {s.ascii_host: [s.ip] for s in sites}
    for endpoint in endpoints:
        names[endpoint.host] = [endpoint.ip]
    return names


def _check_names(sites: tuple[Site, ...], endpoints: tuple[Endpoint, ...]) -> None:
    hosts = list(zone(sites, endpoints))
    for a in hosts:
        clash = [b for b in hosts if a != b and a in b]
        assert not clash, f"{a!r} is a substring of {clash}: string-match faults would leak"
    assert len({s.ip for s in sites}) == len(sites), "two sites share an address"
    assert not {e.ip for e in endpoints} & {s.ip for s in sites}, "endpoint on a site address"
    for endpoint in endpoints:
        same = [e for e in endpoints if e.host == endpoint.host and e.ip != endpoint.ip]
        assert not same, f"{endpoint.host} has two addresses"
    assert len({(e.ip, e.port, e.proto) for e in endpoints}) == len(endpoints)


_check_names(SITES, ENDPOINTS)


@dataclass(frozen=True, slots=True)
class Names:
    """Per-run names: namespaces carry the owner pid (for stale cleanup), veths a random tag."""

    pid: int
    tag: str
    client: str = field(init=False)
    router: str = field(init=False)
    internet: str = field(init=False)

    def __post_init__(self) -> None:
        base = f"{netns.PREFIX}{self.pid}-{self.tag}"
        object.__setattr__(self, "client", f"{base}-cli")
        object.__setattr__(self, "router", f"{base}-isp")
        object.__setattr__(self, "internet", f"{base}-net")

    def veth(self, end: str) -> str:
        """Interface name for one veth end (``c``, ``rc``, ``ri``, ``i``); at most 15 chars."""
        name = f"kzl{self.tag}{end}"
        assert len(name) <= 15, name
        return name

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.client, self.router, self.internet)

    @classmethod
    def fresh(cls) -> Names:
        return cls(pid=os.getpid(), tag=secrets.token_hex(3))


def build(names: Names, sites: tuple[Site, ...] = SITES) -> None:
    """Create namespaces, links, addresses, routes and egress guards (the caller tears down)."""
    for ns in names.all:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        netns.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")  # no v6 on veths: no RS/MLD
    _link(names.client, names.veth("c"), names.router, names.veth("rc"))
    _link(names.router, names.veth("ri"), names.internet, names.veth("i"))
    _addresses(names, sites)
    _routes(names)
    netns.sysctl(names.router, "net.ipv4.ip_forward", "1")
    for ns in names.all:
        install_egress_guard(ns)
    _fault_chains(names.router)


def _link(ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
    """A veth pair created directly inside the two namespaces (never in the host's)."""
    run(["ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b,
         "netns", ns_b])
    run(["ip", "-n", ns_a, "link", "set", dev_a, "up"])
    run(["ip", "-n", ns_b, "link", "set", dev_b, "up"])


def _addr(ns: str, dev: str, cidr: str) -> None:
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])


def _addresses(names: Names, sites: tuple[Site, ...]) -> None:
    _addr(names.client, names.veth("c"), f"{CLIENT_IP}/24")
    _addr(names.router, names.veth("rc"), f"{ROUTER_CLIENT_IP}/24")
    for extra in (BLOCKPAGE_IP, PROXY_IP):
        _addr(names.router, names.veth("rc"), f"{extra}/24")
    _addr(names.router, names.veth("ri"), f"{ROUTER_INTERNET_IP}/24")
    _addr(names.internet, names.veth("i"), f"{INTERNET_IP}/24")
    _addr(names.internet, names.veth("i"), f"{HELPER_IP}/24")
    for ip in dict.fromkeys([s.ip for s in sites] + [e.ip for e in ENDPOINTS]):
        _addr(names.internet, names.veth("i"), f"{ip}/24")


def _routes(names: Names) -> None:
    """Defaults point into the lab only, so a stray packet meets the egress guard and is counted."""
    run(["ip", "-n", names.client, "route", "add", "default", "via", ROUTER_CLIENT_IP])
    run(["ip", "-n", names.internet, "route", "add", "default", "via", ROUTER_INTERNET_IP])


def install_egress_guard(ns: str) -> None:
    """OUTPUT and FORWARD jump to a chain that rejects (and counts) anything outside the lab."""
    for v6 in (False, True):
        iptables(ns, "-N", EGRESS_CHAIN, v6=v6)
        iptables(ns, "-A", EGRESS_CHAIN, "-o", "lo", "-j", "RETURN", v6=v6)
        if not v6:
            iptables(ns, "-A", EGRESS_CHAIN, "-d", LAB_NET, "-j", "RETURN")
        iptables(ns, "-A", EGRESS_CHAIN, "-j", "REJECT", v6=v6)
        for hook in ("OUTPUT", "FORWARD"):
            iptables(ns, "-I", hook, "1", "-j", EGRESS_CHAIN, v6=v6)


def egress_rejections(ns: str) -> int:
    """Packets the egress guard rejected in ``ns`` (IPv4 + IPv6); must stay 0."""
    total = 0
    for v6 in (False, True):
        out = iptables(ns, "-L", EGRESS_CHAIN, "-v", "-x", "-n", v6=v6).stdout
        for line in out.splitlines()[2:]:
            cols = line.split()
            if len(cols) > 2 and cols[2] == "REJECT":
                total += int(cols[0])
    return total


def _fault_chains(router: str) -> None:
    """Empty chains for scenario faults; flushing them removes every fault at once."""
    iptables(router, "-N", FAULT_CHAIN)
    iptables(router, "-A", "FORWARD", "-j", FAULT_CHAIN)
    iptables(router, "-N", NAT_CHAIN, table="nat")
    iptables(router, "-A", "PREROUTING", "-j", NAT_CHAIN, table="nat")


def teardown(names: Names) -> list[str]:
    """Delete everything :func:`build` made; return what could not be removed."""
    problems = []
    for ns in names.all:
        netns.delete_namespace(ns)
    remaining = set(netns.list_namespaces())
    problems += [f"namespace {ns} still exists" for ns in names.all if ns in remaining]
    return problems
