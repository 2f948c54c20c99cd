"""Censorship scenarios: the faults the ISP router applies, each installed and verified.

A :class:`Scenario` is a list of faults against one site. Installing a fault checks that it
took effect (``iptables -C`` finds the rule, the ISP resolver really answers the lie, the
relay is listening), so a test can never pass because its fault silently failed to apply.
Removing is idempotent; :func:`assert_clean` proves the router is back to honest.

Mechanisms: iptables on the router's FORWARD path (``-m string`` on the SNI / Host, RST via
``REJECT --reject-with tcp-reset``, blackhole via CONNMARK + DROP so the whole flow dies), SYN
reject/drop by address, RST on any data to an address (``--tcp-flags PSH PSH``, whatever the
SNI); DNAT into userspace boxes on the router (``sni_filter`` for FIN and delay/throttle,
which iptables cannot do and this kernel has no netem for; ``blockpage`` with the
fingerprinted KZ page or an unknown 403 notice; ``mitm``); per-name rules of the ISP
resolver (reloaded on SIGHUP). Endpoint scenarios (``ep_*``) aim one rule at each endpoint
daemon: UDP drop, SYN reject/drop on its port, RST on a name in the ClientHello or on any
data to its address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .netns import LabError, iptables, run
from .topology import ENDPOINTS, FAULT_CHAIN, NAT_CHAIN, Endpoint

if TYPE_CHECKING:
    from .lab import Lab

BLACKHOLE_MARK = "0x4b5a"
COMMENT = ("-m", "comment", "--comment", "kzl-fault")
RST = ("REJECT", "--reject-with", "tcp-reset")
DELAY_SECONDS = 2.0  # tls_delay: server bytes held this long after the ClientHello
THROTTLE_RATE = 32 * 1024  # throttle: bytes/s cap of the server-to-client direction


class Fault(Protocol):
    """One change to the ISP that can be applied, verified and undone."""

    def install(self, lab: Lab) -> None: ...

    def remove(self, lab: Lab) -> None: ...

    def describe(self) -> str: ...


# --------------------------------------------------------------------------- iptables


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule in the router's fault chains (filter/KZL-FAULTS or nat/KZL-NAT)."""

    spec: tuple[str, ...]
    table: str = "filter"
    box: str | None = None  # the router service this rule diverts traffic to, if any

    @property
    def chain(self) -> str:
        return FAULT_CHAIN if self.table == "filter" else NAT_CHAIN

    def install(self, lab: Lab) -> None:
        if self.box is not None and not lab.service(self.box).alive():
            raise LabError(f"{self.box} is not running:\n{lab.service(self.box).log_tail()}")
        iptables(lab.names.router, "-A", self.chain, *self.spec, *COMMENT, table=self.table)
        check = iptables(lab.names.router, "-C", self.chain, *self.spec, *COMMENT,
                         table=self.table, check=False)
        if check.returncode != 0:
            raise LabError(f"rule not present after install: {self.describe()}")

    def remove(self, lab: Lab) -> None:
        iptables(lab.names.router, "-D", self.chain, *self.spec, *COMMENT, table=self.table,
                 check=False)

    def describe(self) -> str:
        return f"iptables -t {self.table} -A {self.chain} {' '.join(self.spec)}"


def syn(ip: str, target: tuple[str, ...]) -> Rule:
    return Rule(("-d", ip, "-p", "tcp", "--syn", "-j", *target))


def data_to(ip: str, port: int, target: tuple[str, ...]) -> Rule:
    """Any packet carrying data (PSH) to ``ip:port``, whatever name it carries: the handshake
    completes, the first payload (any ClientHello) meets ``target``."""
    return Rule(("-d", ip, "-p", "tcp", "--dport", str(port), "--tcp-flags", "PSH", "PSH",
                 "-j", *target))


def string_match(port: int, name: str, target: tuple[str, ...]) -> Rule:
    """Match the name anywhere in a packet to ``port`` (SNI in a ClientHello, Host header)."""
    return Rule(("-p", "tcp", "--dport", str(port), "-m", "string", "--algo", "bm",
                 "--string", name, "-j", *target))


def blackhole(port: int, name: str) -> tuple[Rule, ...]:
    """Drop the matching packet and, via its conntrack mark, every later packet of the flow."""
    return (
        Rule(("-m", "connmark", "--mark", BLACKHOLE_MARK, "-j", "DROP")),
        string_match(port, name, ("CONNMARK", "--set-mark", BLACKHOLE_MARK)),
        string_match(port, name, ("DROP",)),
    )


def udp_drop(ip: str, port: int) -> Rule:
    """Every datagram to ``ip:port`` dropped (a UDP blackhole: no ICMP, the client times out)."""
    return Rule(("-d", ip, "-p", "udp", "--dport", str(port), "-j", "DROP"))


def port_syn(ip: str, port: int, target: tuple[str, ...]) -> Rule:
    """A port block: SYNs to ``ip:port`` meet ``target`` (RST: refused; DROP: timeout)."""
    return Rule(("-d", ip, "-p", "tcp", "--dport", str(port), "--syn", "-j", *target))


def strings_to(ip: str, port: int, strings: tuple[str, ...], target: tuple[str, ...]) -> Rule:
    """A packet to ``ip:port`` containing every one of ``strings`` (DPI on a ClientHello)."""
    matches = [a for text in strings for a in ("-m", "string", "--algo", "bm", "--string", text)]
    return Rule(("-d", ip, "-p", "tcp", "--dport", str(port), *matches, "-j", *target))


def divert(lab: Lab, ip: str, port: int, box: str) -> Rule:
    """DNAT a site's port to a box on the router (it finds the real target via SO_ORIGINAL_DST)."""
    to = lab.boxes[box]
    return Rule(("-d", ip, "-p", "tcp", "--dport", str(port), "-j", "DNAT",
                 "--to-destination", f"{to[0]}:{to[1]}"), table="nat", box=box)


# --------------------------------------------------------------------------- DNS


@dataclass(frozen=True, slots=True)
class DnsRule:
    """A per-name rule of the ISP resolver; verified by asking the resolver from the client."""

    name: str  # wire (A-label) name
    action: str  # nxdomain | servfail | no_answer | bogus:IP | redirect:IP | silent

    def install(self, lab: Lab) -> None:
        lab.isp_rules[self.name] = self.action
        reload_isp_rules(lab)
        _until(lambda: self._took_effect(lab), f"ISP resolver did not apply {self.describe()}")

    def remove(self, lab: Lab) -> None:
        if lab.isp_rules.pop(self.name, None) is not None:
            reload_isp_rules(lab)
            _until(lambda: not self._took_effect(lab), f"ISP resolver kept {self.describe()}")

    def _took_effect(self, lab: Lab) -> bool:
        got = lab.raw("dns", self.name, "--server", lab.resolver_ip, timeout=0.5)
        kind, _, arg = self.action.partition(":")
        expected: dict[str, Callable[[dict[str, Any]], bool]] = {
            "nxdomain": lambda r: r.get("rcode") == 3,
            "servfail": lambda r: r.get("rcode") == 2,
            "no_answer": lambda r: r.get("rcode") == 0 and r.get("answers") == [],
            "silent": lambda r: r.get("error") == "TimeoutError",
            "bogus": lambda r: r.get("answers") == [arg],
            "redirect": lambda r: r.get("answers") == [arg],
        }
        return expected[kind](got)

    def describe(self) -> str:
        return f"ISP resolver: {self.name} -> {self.action}"


@dataclass(frozen=True, slots=True)
class ProxyRule:
    """A per-SNI action of the honest transparent proxy (the ``dns_proxy`` box): DPI in
    front of it. Verified by a handshake with that SNI from the client."""

    name: str  # the SNI
    action: str  # an sni_filter action: reset | blackhole | fin

    def install(self, lab: Lab) -> None:
        lab.proxy_rules[self.name] = self.action
        _reload_proxy_rules(lab)
        _until(lambda: self._took_effect(lab), f"proxy did not apply {self.describe()}")

    def remove(self, lab: Lab) -> None:
        if lab.proxy_rules.pop(self.name, None) is not None:
            _reload_proxy_rules(lab)
            _until(lambda: not self._took_effect(lab), f"proxy kept {self.describe()}")

    def _took_effect(self, lab: Lab) -> bool:
        got = lab.raw("tls", self.name, "--ip", lab.proxy_ip, "--cafile", str(lab.ca_file),
                      timeout=0.5)
        return "version" not in got

    def describe(self) -> str:
        return f"transparent proxy: SNI {self.name} -> {self.action}"


def _reload_proxy_rules(lab: Lab) -> None:
    tmp = lab.proxy_rules_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"default": "pass", "rules": dict(lab.proxy_rules)}))
    tmp.replace(lab.proxy_rules_path)
    lab.service("proxy_https").signal_hup()


def reload_isp_rules(lab: Lab) -> None:
    """Rewrite the ISP resolver's rules file and SIGHUP it."""
    data = {"default": lab.isp_default, "rules": dict(lab.isp_rules)}
    tmp = lab.isp_rules_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(lab.isp_rules_path)
    lab.service("isp_dns").signal_hup()


def _until(ok: Callable[[], bool], message: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.05)
    raise LabError(message)


# --------------------------------------------------------------------------- delay


@dataclass(frozen=True, slots=True)
class Delay:
    """Hold a site's TLS bytes ``seconds``: netem when the kernel has it, else the SNI relay."""

    ip: str
    seconds: float

    def install(self, lab: Lab) -> None:
        if lab.netem:
            _netem_delay(lab, self.ip, self.seconds)
            lab.mechanisms["delay"] = "netem"
        else:
            divert(lab, self.ip, 443, "filter").install(lab)
            lab.mechanisms["delay"] = "sni_filter relay (no netem in this kernel)"

    def remove(self, lab: Lab) -> None:
        run(["tc", "qdisc", "del", "dev", lab.names.veth("ri"), "root"], ns=lab.names.router,
            check=False)
        divert(lab, self.ip, 443, "filter").remove(lab)

    def describe(self) -> str:
        return f"delay {self.ip}:443 by {self.seconds}s"


def netem_available(ns: str) -> bool:
    """Can this kernel do ``tc qdisc ... netem``? (Tried on the namespace's loopback.)"""
    ok = run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], ns=ns,
             check=False).returncode == 0
    if ok:
        run(["tc", "qdisc", "del", "dev", "lo", "root"], ns=ns, check=False)
    return ok


_FAST = ("htb", "rate", "10gbit")


def _netem_delay(lab: Lab, ip: str, seconds: float) -> None:
    """htb root; class 1:2 gets netem; a u32 filter sends the site's packets there."""
    dev, ns = lab.names.veth("ri"), lab.names.router
    for argv in (["qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
                 ["class", "add", "dev", dev, "parent", "1:", "classid", "1:1", *_FAST],
                 ["class", "add", "dev", dev, "parent", "1:", "classid", "1:2", *_FAST],
                 ["qdisc", "add", "dev", dev, "parent", "1:2", "handle", "20:", "netem", "delay",
                  f"{int(seconds * 1000)}ms"],
                 ["filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "u32", "match",
                  "ip", "dst", f"{ip}/32", "flowid", "1:2"]):
        run(["tc", *argv], ns=ns)
    if "netem" not in run(["tc", "qdisc", "show", "dev", dev], ns=ns).stdout:
        raise LabError(f"netem qdisc missing on {dev} after install")


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named censorship scenario against one site, with its expected raw symptom."""

    name: str
    site: str  # key into lab.sites ("" for endpoint scenarios)
    symptom: str
    faults: tuple[Fault, ...] = field(default_factory=tuple)
    endpoints: tuple[str, ...] = ()  # endpoint scenarios: faults[i] is aimed at endpoints[i]

    def install(self, lab: Lab) -> None:
        try:
            for fault in self.faults:
                fault.install(lab)
        except BaseException:
            self.remove(lab)
            raise

    def remove(self, lab: Lab) -> None:
        for fault in reversed(self.faults):
            fault.remove(lab)

    def describe(self) -> str:
        return f"{self.name}: " + "; ".join(f.describe() for f in self.faults)


def catalog(lab: Lab) -> dict[str, Scenario]:
    """Every scenario the lab can apply, keyed by name."""
    return {sc.name: sc for sc in (*_dns_scenarios(lab), *_tcp_tls_scenarios(lab),
                                   *_http_scenarios(lab), *endpoint_scenarios())}


def _dns_scenarios(lab: Lab) -> list[Scenario]:
    """Lies of the ISP resolver (per-name rules)."""
    s = {k: v.ascii_host for k, v in lab.sites.items()}
    return [
        Scenario("dns_nxdomain", "dns_nx", "ISP resolver answers NXDOMAIN",
                 (DnsRule(s["dns_nx"], "nxdomain"),)),
        Scenario("dns_servfail", "dns_servfail", "ISP resolver answers SERVFAIL",
                 (DnsRule(s["dns_servfail"], "servfail"),)),
        Scenario("dns_no_answer", "dns_empty", "ISP resolver answers NOERROR, no records",
                 (DnsRule(s["dns_empty"], "no_answer"),)),
        Scenario("dns_bogus", "dns_bogus", "ISP resolver answers 127.0.0.2",
                 (DnsRule(s["dns_bogus"], "bogus:127.0.0.2"),)),
        Scenario("dns_blockpage", "dns_blockpage", "ISP resolver answers the blockpage server",
                 (DnsRule(s["dns_blockpage"], f"redirect:{lab.blockpage_ip}"),)),
        Scenario("dns_silent", "dns_silent", "ISP resolver never answers (timeout)",
                 (DnsRule(s["dns_silent"], "silent"),)),
        Scenario("dns_proxy", "proxied", "ISP resolver answers an honest transparent proxy",
                 (DnsRule(s["proxied"], f"redirect:{lab.proxy_ip}"),)),
        Scenario("dns_proxy_sni_rst", "proxied",
                 "ISP resolver answers the transparent proxy, which resets the site's SNI",
                 (DnsRule(s["proxied"], f"redirect:{lab.proxy_ip}"),
                  ProxyRule(s["proxied"], "reset"))),
        Scenario("dns_cdn", "proxied", "ISP resolver answers another address of the site's "
                 "network (a CDN edge: the same web server)",
                 (DnsRule(s["proxied"], f"redirect:{lab.sites['open'].ip}"),)),
    ]


def _tcp_tls_scenarios(lab: Lab) -> list[Scenario]:
    """Faults on the path: by address (SYN) or by the ClientHello's SNI."""
    s = {k: v.ascii_host for k, v in lab.sites.items()}
    ip = {k: v.ip for k, v in lab.sites.items()}
    return [
        Scenario("syn_reject", "syn_reject", "RST to the SYN (ECONNREFUSED)",
                 (syn(ip["syn_reject"], RST),)),
        Scenario("syn_drop", "syn_drop", "SYN dropped (connect timeout)",
                 (syn(ip["syn_drop"], ("DROP",)),)),
        Scenario("addr_rst", "addr_rst", "RST on the first data to the address:443, any SNI",
                 (data_to(ip["addr_rst"], 443, RST),)),
        Scenario("tls_rst", "tls_rst", "RST on the ClientHello SNI (ECONNRESET)",
                 (string_match(443, s["tls_rst"], RST),)),
        Scenario("tls_blackhole", "tls_blackhole", "flow dropped after the SNI (timeout)",
                 blackhole(443, s["tls_blackhole"])),
        Scenario("tls_fin", "tls_fin", "relay closes with FIN after the ClientHello (EOF)",
                 (divert(lab, ip["tls_fin"], 443, "filter"),)),
        Scenario("tls_delay", "tls_delay", f"server bytes held {DELAY_SECONDS}s after the SNI",
                 (Delay(ip["tls_delay"], DELAY_SECONDS),)),
        Scenario("tls_mitm", "tls_mitm", "TLS intercepted, leaf issued by 'Security Certificate'",
                 (divert(lab, ip["tls_mitm"], 443, "mitm"),)),
    ]


def _http_scenarios(lab: Lab) -> list[Scenario]:
    """Faults keyed on the HTTP Host header (and, for throttling, the SNI too)."""
    s = {k: v.ascii_host for k, v in lab.sites.items()}
    ip = {k: v.ip for k, v in lab.sites.items()}
    return [
        Scenario("http_rst", "http_rst", "RST on the request's Host (ECONNRESET)",
                 (string_match(80, s["http_rst"], RST),)),
        Scenario("http_blackhole", "http_blackhole", "flow dropped after the Host (timeout)",
                 blackhole(80, s["http_blackhole"])),
        Scenario("http_fin", "http_fin", "relay closes with FIN after the request (EOF)",
                 (divert(lab, ip["http_fin"], 80, "filter"),)),
        Scenario("http_blockpage", "http_blockpage", "transparent proxy serves the blockpage",
                 (divert(lab, ip["http_blockpage"], 80, "blockpage_proxy"),)),
        Scenario("http_diff", "http_diff", "transparent proxy serves an unknown 403 notice",
                 (divert(lab, ip["http_diff"], 80, "diff_proxy"),)),
        Scenario("throttle", "throttle", f"server bytes capped at {THROTTLE_RATE} B/s "
                 "after the SNI or Host", (divert(lab, ip["throttle"], 80, "filter"),
                                           divert(lab, ip["throttle"], 443, "filter"))),
    ]


TOR_SNI = ("www.", ".com")  # tor's ClientHello names are www.<random>.com: a DPI pattern


def _endpoint_scenario(name: str, symptom: str,
                       rules: dict[str, Callable[[Endpoint], Rule]]) -> Scenario:
    """One fault per endpoint key, in order (rule counters are read back in that order)."""
    by_key = {e.key: e for e in ENDPOINTS}
    return Scenario(name, "", symptom, tuple(make(by_key[key]) for key, make in rules.items()),
                    endpoints=tuple(rules))


def endpoint_scenarios() -> list[Scenario]:
    """Faults against the real endpoint daemons (:data:`topology.ENDPOINTS`)."""
    def rst_on(*strings: str) -> Callable[[Endpoint], Rule]:
        return lambda e: strings_to(e.ip, e.port, strings or (e.host,), RST)

    def syn_to(target: tuple[str, ...]) -> Callable[[Endpoint], Rule]:
        return lambda e: port_syn(e.ip, e.port, target)

    def to_ip_port(e: Endpoint) -> Rule:
        return udp_drop(e.ip, e.port)

    def data_rst(e: Endpoint) -> Rule:
        return data_to(e.ip, e.port, RST)

    return [
        _endpoint_scenario("ep_udp_drop", "UDP to the port dropped (timeout)",
                           dict.fromkeys(("openvpn_udp", "stun", "wireguard"), to_ip_port)),
        _endpoint_scenario("ep_port_reject", "RST to the SYN (ECONNREFUSED)",
                           dict.fromkeys(("openvpn_tcp", "tcp"), syn_to(RST))),
        _endpoint_scenario("ep_tls_rst", "RST on the ClientHello's SNI (ECONNRESET)",
                           {"tor": rst_on(*TOR_SNI), "tls": rst_on()}),
        _endpoint_scenario("ep_addr_rst", "RST on the first data to the address, any content",
                           dict.fromkeys(("tor", "openvpn_tcp", "tls", "obfs4"), data_rst)),
        _endpoint_scenario("ep_syn_drop", "SYN dropped (connect timeout)",
                           dict.fromkeys(("tor", "tcp", "obfs4"), syn_to(("DROP",)))),
    ]


def rule_hits(lab: Lab) -> list[int]:
    """Packets each rule of the router's filter fault chain matched, in chain order."""
    out = iptables(lab.names.router, "-L", FAULT_CHAIN, "-v", "-x", "-n").stdout
    return [int(line.split()[0]) for line in out.splitlines()[2:] if line.strip()]


def relay_rules(lab: Lab) -> dict[str, str]:
    """Per-name actions of the router's ``sni_filter`` relay (it only sees diverted flows)."""
    s = {k: v.ascii_host for k, v in lab.sites.items()}
    return {
        s["tls_fin"]: "fin",
        s["tls_delay"]: f"delay:{DELAY_SECONDS}",
        s["http_fin"]: "fin",
        s["throttle"]: f"rate:{THROTTLE_RATE}",
    }


def assert_clean(lab: Lab) -> None:
    """The router is honest again: fault chains empty, no qdisc, ISP resolver rules empty."""
    for table, chain in (("filter", FAULT_CHAIN), ("nat", NAT_CHAIN)):
        rules = iptables(lab.names.router, "-S", chain, table=table).stdout.splitlines()
        leftover = [r for r in rules if not r.startswith("-N")]
        if leftover:
            raise LabError(f"faults left in {table}/{chain}: {leftover}")
    qdisc = run(["tc", "qdisc", "show", "dev", lab.names.veth("ri")], ns=lab.names.router).stdout
    if "htb" in qdisc or "netem" in qdisc:
        raise LabError(f"qdisc left on the router: {qdisc}")
    if lab.isp_rules:
        raise LabError(f"ISP resolver rules left: {lab.isp_rules}")
    if lab.proxy_rules:
        raise LabError(f"transparent proxy rules left: {lab.proxy_rules}")
