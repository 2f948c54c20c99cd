"""Endpoint types through the censored lab: real daemons in the internet namespace, faults on
the router, ``kzprobe measure URI...`` in the client namespace, exact verdicts.

Each scenario is measured once (every endpoint it concerns, in one ``kzprobe measure`` run:
the endpoints are probed concurrently), and each endpoint's record is then checked by its own
test. The expectations follow ``kzprobe/verdict/analysis/endpoints.py``: a code needs the control's
run of the same URI (the helper in the internet namespace, behind no censor) to have
succeeded. Every fault rule must have matched packets during the run, and the control must
have reached the endpoint, so a verdict can never come from a fault that did not apply or a
daemon that was down.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import endpoints, faults, netns
from .conftest import require_endpoint
from .endpoints import EndpointServers
from .lab import Lab
from .records import Record, keys
from .topology import ENDPOINTS, SITES

pytestmark = pytest.mark.lab

TEST_NAMES = {"openvpn+udp": "openvpn", "openvpn+tcp": "openvpn", "tor": "tor",
              "obfs4": "tor", "stun": "stunreachability", "wireguard": "wireguard",
              "tcp": "tcpconnect", "tls": "tlshandshake"}


@dataclass(frozen=True, slots=True)
class Expect:
    """The endpoint keys of one record (``blocking``/``accessible`` as the analysis sets them)."""

    failure: str | None = None
    failed_operation: str | None = None
    interference: tuple[str, ...] = ()
    blocking: str | bool | None = False
    accessible: bool | None = True
    control_works: bool | None = True  # None: the helper gives no control (wireguard key files)


def blocked(failure: str, operation: str, code: str, blocking: str) -> Expect:
    return Expect(failure, operation, (code,), blocking, False)


TIMEOUT, REFUSED, RESET = "generic_timeout_error", "connection_refused", "connection_reset"
REACHABLE = Expect()
# scenario -> endpoint key -> expectation ("benign": no fault). The README table is this one.
_EXPECTED: dict[str, dict[str, Expect]] = {
    "benign": {**dict.fromkeys(("openvpn_udp", "openvpn_tcp", "tor", "obfs4", "stun", "tcp",
                                "tls"), REACHABLE),
               "wireguard": Expect(control_works=None)},
    "ep_udp_drop": {
        "openvpn_udp": blocked(TIMEOUT, "openvpn_handshake", "openvpn.timeout", "openvpn"),
        "stun": blocked(TIMEOUT, "stun_binding", "stun.timeout", "stun"),
        # the lab's helper has no registered WireGuard peer of its own ([helper]
        # wireguard_peers): it says it cannot judge, so no evidence and no code
        "wireguard": Expect(TIMEOUT, "wireguard_handshake", (), None, None, None),
    },
    "ep_port_reject": dict.fromkeys(("openvpn_tcp", "tcp"),
                                    blocked(REFUSED, "tcp_connect", "tcp.refused", "tcp_ip")),
    "ep_tls_rst": dict.fromkeys(("tor", "tls"),
                                blocked(RESET, "tls_handshake", "tls.reset", "tls")),
    "ep_addr_rst": {
        "openvpn_tcp": blocked(RESET, "openvpn_handshake", "openvpn.reset", "openvpn"),
        "obfs4": blocked(RESET, "obfs4_handshake", "obfs4.reset", "obfs4"),
        # the benign SNI is reset too: aimed at the address, so tcp.reset as for websites
        **dict.fromkeys(("tor", "tls"), blocked(RESET, "tls_handshake", "tcp.reset", "tcp_ip")),
    },
    "ep_syn_drop": dict.fromkeys(("tor", "obfs4", "tcp"),
                                 blocked(TIMEOUT, "tcp_connect", "tcp.timeout", "tcp_ip")),
}
# Only endpoints the topology defines (obfs4 needs its entry in topology.ENDPOINTS and its
# faults in faults.endpoint_scenarios; until then its cases are not collected).
EXPECTED = {name: {k: v for k, v in cases.items() if k in {e.key for e in ENDPOINTS}}
            for name, cases in _EXPECTED.items()}


@dataclass(frozen=True, slots=True)
class Run:
    """One scenario measured: a record per endpoint key, and packets each fault matched."""

    records: dict[str, Record]
    hits: dict[str, int]
    seconds: float


RunScenario = Callable[[str], Run]


@pytest.fixture(scope="module")
def run_scenario(lab: Lab, lab_endpoints: EndpointServers,
                 tmp_path_factory: pytest.TempPathFactory) -> RunScenario:
    """``run_scenario(name)``: the scenario measured once per module (cached)."""
    assert lab.control_url, f"the lab has no control helper: {lab.control_missing}"
    cache: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in cache:
            cache[name] = _measure(lab, lab_endpoints, tmp_path_factory.mktemp(name), name)
        return cache[name]

    return run


def _measure(lab: Lab, servers: EndpointServers, tmp: Path, name: str) -> Run:
    wanted = [k for k in EXPECTED[name] if k not in servers.missing]
    uris = {servers.uri(k): k for k in wanted}
    config = lab.write_config(tmp)
    start = time.monotonic()
    if name == "benign":
        proc, hits = lab.kzprobe(["measure", *uris, "--config", str(config)]), {}
    else:
        with lab.scenario(name) as scenario:
            proc = lab.kzprobe(["measure", *uris, "--config", str(config)])
            hits = dict(zip(scenario.endpoints, faults.rule_hits(lab), strict=True))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    records: list[Record] = [json.loads(line) for line in lines]
    assert len(records) == len(uris), f"rc={proc.returncode}:\n{proc.stderr[-3000:]}"
    return Run({uris[r["input"]]: r for r in records}, hits, time.monotonic() - start)


def _check(run: Run, servers: EndpointServers, key: str, want: Expect) -> dict[str, Any]:
    """The record of ``key`` says ``want``; its fault (if any) matched packets."""
    record = run.records[key]
    tk = keys(record)
    assert record["test_name"] == TEST_NAMES[servers.endpoint(key).scheme]
    got = Expect(tk.get("failure"), tk.get("failed_operation"), tuple(tk.get("interference") or ()),
                 tk.get("blocking"), tk.get("accessible"), _control_works(tk))
    assert got == want, f"{key}: {got} != {want}\ntest_keys: {_brief(tk)}"
    assert tk["reachable"] is (want.failure is None)
    if run.hits:
        assert run.hits[key] > 0, f"the fault aimed at {key} matched no packet"
    return tk


def _control_works(tk: dict[str, Any]) -> bool | None:
    control = tk.get("control")
    if control is None:
        return None
    reachable: bool | None = control["x_endpoint"]["reachable"]
    return reachable


def _brief(tk: dict[str, Any]) -> dict[str, Any]:
    """The keys worth printing when a verdict differs."""
    names = ("reachable", "failure", "failed_operation", "interference", "blocking",
             "accessible", "control_failure", "x_endpoint_results", "tcp_connect",
             "tls_handshakes", "x_sni_checks", "dns_experiment_failure")
    shown = {k: tk.get(k) for k in names}
    shown["tls_handshakes"] = [{k: h.get(k) for k in ("address", "server_name", "failure")}
                               for h in tk.get("tls_handshakes") or []]
    shown["control"] = (tk.get("control") or {}).get("x_endpoint")
    return shown


def _cases(scenario: str, only: tuple[str, ...] = ()) -> list[str]:
    return [k for k in EXPECTED[scenario] if not only or k in only]


def _verdict(run_scenario: RunScenario, servers: EndpointServers, scenario: str,
             key: str) -> dict[str, Any]:
    require_endpoint(servers, key)
    return _check(run_scenario(scenario), servers, key, EXPECTED[scenario][key])


# --------------------------------------------------------------------------- set-up


def test_endpoints_have_their_own_lab_addresses() -> None:
    """Every endpoint sits on its own 198.18.2.x address, apart from the sites."""
    lab_net = ipaddress.ip_network(netns.LAB_NET)
    assert all(ipaddress.ip_address(e.ip) in lab_net for e in ENDPOINTS)
    assert not {e.ip for e in ENDPOINTS} & {s.ip for s in SITES}
    assert {e.key for e in ENDPOINTS} == set(EXPECTED["benign"])


def test_tor_config_keeps_the_relay_private(tmp_path: Path) -> None:
    """The lab's torrc is tests/endpoints' private bridge, moved to the lab address only."""
    relay = next(e for e in ENDPOINTS if e.key == "tor")
    text = endpoints.tor_config(relay, tmp_path)
    lines = text.splitlines()
    assert f"ORPort {relay.ip}:{relay.port}" in lines and f"Address {relay.ip}" in lines
    assert "PublishServerDescriptor 0" in lines and "UseDefaultFallbackDirs 0" in lines
    authorities = [line for line in lines if line.startswith("DirAuthority")]
    assert len(authorities) == 1 and " 127.0.0.1:9 " in authorities[0]
    assert not [line for line in lines if "Bridge " in line or "FallbackDir " in line]


# --------------------------------------------------------------------------- benign


@pytest.mark.parametrize("key", _cases("benign"))
def test_endpoint_reachable_without_censorship(run_scenario: RunScenario,
                                               lab_endpoints: EndpointServers, key: str) -> None:
    """With an honest router every endpoint answers its protocol: reachable, no code."""
    tk = _verdict(run_scenario, lab_endpoints, "benign", key)
    assert tk["dns_experiment_failure"] is None
    assert [r["address"] for r in tk["x_endpoint_results"]] == [
        f"{lab_endpoints.endpoint(key).ip}:{lab_endpoints.endpoint(key).port}"]


def test_tor_relay_identity_is_checked(run_scenario: RunScenario,
                                       lab_endpoints: EndpointServers) -> None:
    """The relay's CERTS identity matches the fingerprint tor wrote: it is the real relay."""
    require_endpoint(lab_endpoints, "tor")
    link = keys(run_scenario("benign").records["tor"])["x_tor_link"][0]
    assert link["fingerprint"] == lab_endpoints.tor_fingerprint
    assert link["fingerprint_match"] is True


# --------------------------------------------------------------------------- UDP


@pytest.mark.parametrize("key", _cases("ep_udp_drop", ("openvpn_udp", "stun")))
def test_udp_drop(run_scenario: RunScenario, lab_endpoints: EndpointServers, key: str) -> None:
    """UDP to the port dropped while the control completes the exchange: <protocol>.timeout."""
    tk = _verdict(run_scenario, lab_endpoints, "ep_udp_drop", key)
    writes = [e for e in tk["network_events"] if e["operation"] == "write_to"]
    assert len(writes) == 3  # the request was retransmitted, never answered


def test_udp_drop_of_wireguard_has_no_verdict(run_scenario: RunScenario,
                                              lab_endpoints: EndpointServers) -> None:
    """WireGuard dropped: a timeout, but the lab's helper has no registered peer of its own,
    so it says it cannot judge (x_endpoint.reachable null): no evidence, no code."""
    tk = _verdict(run_scenario, lab_endpoints, "ep_udp_drop", "wireguard")
    assert tk["control_failure"] is None
    assert tk["control"]["x_endpoint"]["reachable"] is None


# --------------------------------------------------------------------------- TCP


@pytest.mark.parametrize("key", _cases("ep_port_reject"))
def test_port_block_by_rst(run_scenario: RunScenario, lab_endpoints: EndpointServers,
                           key: str) -> None:
    """SYN rejected with RST on the endpoint's port: tcp.refused, the control connected."""
    tk = _verdict(run_scenario, lab_endpoints, "ep_port_reject", key)
    endpoint = lab_endpoints.endpoint(key)
    assert tk["control"]["tcp_connect"][f"{endpoint.ip}:{endpoint.port}"]["status"] is True


@pytest.mark.parametrize("key", _cases("ep_syn_drop"))
def test_syn_drop(run_scenario: RunScenario, lab_endpoints: EndpointServers, key: str) -> None:
    """SYN dropped on the endpoint's port: tcp.timeout, the control connected."""
    _verdict(run_scenario, lab_endpoints, "ep_syn_drop", key)


# --------------------------------------------------------------------------- RST on TLS / data


@pytest.mark.parametrize("key", _cases("ep_tls_rst"))
def test_rst_on_tls_sni(run_scenario: RunScenario, lab_endpoints: EndpointServers,
                        key: str) -> None:
    """RST on the ClientHello's name (tor: the www.*.com pattern): tls.reset."""
    tk = _verdict(run_scenario, lab_endpoints, "ep_tls_rst", key)
    # the benign SNI got through to the same address: self-proving too
    assert [c["failure"] for c in tk["x_sni_checks"]] == [None]


@pytest.mark.parametrize("key", _cases("ep_addr_rst"))
def test_rst_on_data_to_the_address(run_scenario: RunScenario, lab_endpoints: EndpointServers,
                                    key: str) -> None:
    """RST on the first data to the address (any name): the step that sent it fails reset."""
    tk = _verdict(run_scenario, lab_endpoints, "ep_addr_rst", key)
    connects = [c["status"]["failure"] for c in tk["tcp_connect"]]
    assert connects and set(connects) == {None}  # the handshake completed: only data is hit
    if key in ("tls", "tor"):  # the benign SNI is reset too; only the control proves it
        assert [c["failure"] for c in tk["x_sni_checks"]] == [RESET]


# --------------------------------------------------------------------------- obfs4


@pytest.mark.skipif("obfs4" not in EXPECTED["benign"],
                    reason="topology.ENDPOINTS has no obfs4 endpoint")
def test_obfs4_bridge_proves_its_identity(run_scenario: RunScenario,
                                          lab_endpoints: EndpointServers) -> None:
    """The bridge's AUTH verifies against the cert obfs4proxy wrote: it is the real bridge."""
    require_endpoint(lab_endpoints, "obfs4")
    shake = keys(run_scenario("benign").records["obfs4"])["x_obfs4_handshake"][0]
    assert shake["auth_verified"] is True
    assert shake["bytes_sent"] >= 85 + 64 and shake["bytes_received"] >= 96
