"""Verdicts for endpoint records (``tcpconnect``, ``tlshandshake``, ``openvpn``, ``wireguard``,
``tor`` (OR ports and obfs4 bridges), ``stunreachability``, ``quichandshake``): pure
functions over the recorded test_keys.

``reachable`` and ``failure`` are what the probe saw. An ``interference`` code needs
evidence that the failure is not the endpoint's own, as for websites. The codes and when
each is set are written once, in the README's "Endpoint targets" table
(``tests/test_docs_tables.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kzprobe import failures
from kzprobe.measure.registry import PROTOCOL_STEPS
from kzprobe.verdict.analysis import records as r
from kzprobe.verdict.analysis.certs import known_interception_ca
from kzprobe.verdict.analysis.interference import DNS_FAILURES, TCP_FAILURES, TLS_FAILURES
from kzprobe.verdict.analysis.quic import QUIC_FAILURES

PROTOCOL_FAILURES = {failures.GENERIC_TIMEOUT_ERROR: "timeout", failures.CONNECTION_RESET: "reset",
                     failures.EOF_ERROR: "eof", failures.CONNECTION_REFUSED: "refused"}

Verdict = tuple[Any, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class EndpointControl:
    """What the control vantage saw of the same endpoint."""

    present: bool = False
    works: bool = False  # the helper ran the same endpoint URI and it was reachable
    tcp_ok: frozenset[str] = frozenset()  # ip:port the helper connected to
    dns_ok: bool = False


@dataclass(frozen=True, slots=True)
class EndpointVerdict:
    """``blocking``/``accessible`` follow OONI's meaning: False/True when reachable; the
    blocked step (``tcp_ip``, ``dns``, ``tls``, ``openvpn``...) and False with evidence of
    interference; False/False ("down") when the control failed too; None/None unknown."""

    reachable: bool
    failure: str | None
    codes: tuple[str, ...]
    blocking: str | bool | None = None
    accessible: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reachable": self.reachable, "failure": self.failure,
                "interference": list(self.codes), "blocking": self.blocking,
                "accessible": self.accessible}


def read_control(test_keys: Mapping[str, Any]) -> EndpointControl:
    """The THResponse (plus kzprobe's ``x_endpoint``) as an :class:`EndpointControl`."""
    control = test_keys.get("control")
    if not isinstance(control, Mapping) or test_keys.get("control_failure"):
        return EndpointControl()
    endpoint = r.mapping(control.get("x_endpoint"))
    if "reachable" in endpoint and endpoint["reachable"] is None:
        return EndpointControl()  # the helper could not judge (e.g. no WireGuard key)
    tcp_ok = set()
    for address, value in r.mapping(control.get("tcp_connect")).items():
        parts = r.split_endpoint(address)
        if parts is not None and isinstance(value, Mapping) and value.get("status") is True:
            tcp_ok.add(r.join_endpoint(*parts))
    dns = r.mapping(control.get("dns"))
    addrs = dns.get("addrs")
    return EndpointControl(present=True, works=endpoint.get("reachable") is True,
                           tcp_ok=frozenset(tcp_ok),
                           dns_ok=isinstance(addrs, list) and bool(addrs))


def _address_key(address: Any) -> str | None:
    parts = r.split_endpoint(address)
    return None if parts is None else r.join_endpoint(*parts)


def _sni_check_reached(test_keys: Mapping[str, Any], address: str) -> bool:
    """A benign-SNI handshake to ``address`` completed or failed only on the certificate."""
    for check in r.entries(test_keys.get("x_sni_checks")):
        if _address_key(check.get("address")) == address:
            failure = r.failure(check)
            if failure == "" or failure in failures.CERT_FAILURES:
                return True
    return False


def _chain_of(test_keys: Mapping[str, Any], address: str) -> list[Any]:
    for shake in r.entries(test_keys.get("tls_handshakes")):
        if _address_key(shake.get("address")) == address:
            chain = shake.get("peer_certificates")
            return chain if isinstance(chain, list) else []
    return []


def _tls_codes(test_keys: Mapping[str, Any], address: str, failure: str,
               control: EndpointControl) -> set[str]:
    codes = set()
    if known_interception_ca(_chain_of(test_keys, address)) is not None:
        codes.add("tls.mitm")
    if failure == failures.SSL_UNKNOWN_AUTHORITY and control.works:
        codes.add("tls.mitm")
    code = TLS_FAILURES.get(failure)
    if code and (control.works or _sni_check_reached(test_keys, address)):
        codes.add("tcp.reset" if code == "tls.reset" and _sni_check_reset(test_keys, address)
                  else code)
    return codes


def _sni_check_reset(test_keys: Mapping[str, Any], address: str) -> bool:
    """The benign-SNI handshake to ``address`` was reset too: the RST is aimed at the
    address, not the name (``tcp.reset``, as for websites)."""
    return any(_address_key(c.get("address")) == address
               and r.failure(c) == failures.CONNECTION_RESET
               for c in r.entries(test_keys.get("x_sni_checks")))


def _protocol_code(step: str, failure: str) -> str:
    kind = PROTOCOL_FAILURES.get(failure)
    if kind is None:
        kind = "invalid" if failure.startswith(failures.unknown("ProtocolError")) else "failure"
    return f"{PROTOCOL_STEPS[step]}.{kind}"


def _outcome_codes(test_keys: Mapping[str, Any], outcome: r.Entry,
                   control: EndpointControl) -> set[str]:
    failure, step = r.failure(outcome), r.text(outcome.get("failed_operation")) or ""
    address = _address_key(outcome.get("address")) or ""
    if not failure:
        return set()
    if step == "tcp_connect":
        code = TCP_FAILURES.get(failure)
        evidence = control.works or address in control.tcp_ok
        return {code} if code and evidence else set()
    if step == "tls_handshake":
        return _tls_codes(test_keys, address, failure, control)
    if step == "quic_handshake":  # the web codes: an ICMP unreachable is quic.reset there too
        code = QUIC_FAILURES.get(failure)
        return {code} if code and control.works else set()
    if step in PROTOCOL_STEPS and control.works:
        return {_protocol_code(step, failure)}
    return set()


def _dns_codes(test_keys: Mapping[str, Any], control: EndpointControl) -> set[str]:
    failure = r.text(test_keys.get("dns_experiment_failure"))
    code = DNS_FAILURES.get(failure or "")
    return {code} if code and control.dns_ok else set()


def _blocking(reachable: bool, codes: tuple[str, ...],
              control: EndpointControl) -> tuple[str | bool | None, bool | None]:
    if reachable:
        return False, True
    if codes:
        family = codes[0].partition(".")[0]
        return {"tcp": "tcp_ip"}.get(family, family), False
    if control.present and not control.works and not control.tcp_ok:
        return False, False  # down from outside too
    return None, None


def judge(test_keys: Mapping[str, Any]) -> EndpointVerdict:
    """The verdict of one endpoint record."""
    control = read_control(test_keys)
    reachable = test_keys.get("reachable") is True
    failure = r.text(test_keys.get("failure"))
    if failure is None and not reachable:  # an engine failure record: no endpoint keys
        failure = r.text(test_keys.get("http_experiment_failure")) or failures.UNKNOWN_FAILURE
    codes = _dns_codes(test_keys, control)
    for outcome in r.entries(test_keys.get("x_endpoint_results")):
        codes |= _outcome_codes(test_keys, outcome, control)
    ordered = tuple(sorted(codes))
    blocking, accessible = _blocking(reachable, ordered, control)
    return EndpointVerdict(reachable=reachable, failure=None if reachable else failure,
                           codes=ordered, blocking=blocking, accessible=accessible)


def apply(test_keys: dict[str, Any]) -> Verdict:
    """Write the verdict into ``test_keys``; return its identity for retries.

    The identity's first element plays OONI's ``blocking`` role for the engine: False
    when reachable, else the failure (so an unreachable endpoint is measured again).
    """
    verdict = judge(test_keys)
    test_keys.update(verdict.as_dict())
    return (False if verdict.reachable else verdict.failure), verdict.codes
