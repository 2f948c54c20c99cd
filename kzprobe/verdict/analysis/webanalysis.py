"""Per-step metrics over web observations: a port of OONI's ``minipipeline/analysis.go``.

Each set holds transaction ids. "Unexpected" = the probe failed where the control succeeded;
"expected" = both failed; "unexplained" = a failure after a redirect, where the control has
no per-step data. A lookup is valid as OONI decides it (an address in common, or a non-zero
ASN in common) wherever ASNs are known on both sides; where they are not (no ASN database on
the probe nor on the helper), an address also counts as valid for the domain when a TLS
handshake with the URL's SNI validated on it (by the probe or by the control, LTE's
``ip_info`` flag 8), see :func:`lookup_verdict`. Which rule decided is kept
(``x_dns_consistency_rule``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kzprobe import failures
from kzprobe.verdict.analysis import records as r
from kzprobe.verdict.analysis.httpdiff import (
    body_proportion_factor,
    status_code_match,
    title_different_long_words,
    uncommon_headers_intersection,
)
from kzprobe.verdict.analysis.observations import (
    Container,
    ControlExpectations,
    Obs,
    ip_key,
    url_host,
)

IP_FLAG_VALID_FOR_DOMAIN = 8  # oohelperd ip_info flag: TLS with the URL's SNI succeeded
# Which rule decided a lookup (and, the weakest of them, a record's dns_consistency):
RULE_IP = "ip"  # an address in common with the control
RULE_ASN = "asn"  # OONI's: a non-zero ASN in common, ASNs known on both sides
RULE_TLS = "tls"  # kzprobe's stand-in where no ASN is known: an address TLS validated
RULE_FAILURE = "failure"  # no answers compared: the lookups' failures decided
_RULE_STRENGTH = (RULE_IP, RULE_ASN, RULE_TLS)
_MISCONFIGURED_V6 = (failures.NETWORK_UNREACHABLE, failures.HOST_UNREACHABLE)


@dataclass(frozen=True, slots=True)
class AddressFacts:
    """What we know about addresses besides DNS: ASNs (when recorded) and TLS validation."""

    asn: Mapping[str, int] = field(default_factory=dict)
    validated: frozenset[str] = frozenset()

    def asns(self, ips: frozenset[str]) -> set[int]:
        """The known (non-zero) ASNs of ``ips``; bogons and unknown addresses have none."""
        return {self.asn.get(ip, 0) for ip in ips} - {0}


def _asns_from_answers(test_keys: Mapping[str, Any], asn: dict[str, int]) -> None:
    for query in r.entries(test_keys.get("queries")):
        for answer in r.entries(query.get("answers")):
            ip = answer.get("ipv4") or answer.get("ipv6")
            number = r.integer(answer.get("asn"))
            if isinstance(ip, str) and number > 0:
                asn[ip_key(ip)] = number


def _probe_validated(test_keys: Mapping[str, Any], host: str) -> set[str]:
    result: set[str] = set()
    for event in r.entries(test_keys.get("tls_handshakes")):
        endpoint = r.split_endpoint(event.get("address"))
        if endpoint and not isinstance(event.get("failure"), str) \
                and event.get("server_name") == host and event.get("no_tls_verify") is not True:
            result.add(endpoint[0])
    return result


def _control_validated(control: r.Entry, host: str, asn: dict[str, int]) -> set[str]:
    result: set[str] = set()
    for address, value in r.mapping(control.get("tls_handshake")).items():
        endpoint, entry = r.split_endpoint(address), r.mapping(value)
        if endpoint and entry.get("status") is True and entry.get("server_name") == host:
            result.add(endpoint[0])
    for ip, value in r.mapping(control.get("ip_info")).items():
        info = r.mapping(value)
        if isinstance(ip, str) and r.integer(info.get("flags")) & IP_FLAG_VALID_FOR_DOMAIN:
            result.add(ip_key(ip))
        if isinstance(ip, str) and r.integer(info.get("asn")) > 0:
            asn.setdefault(ip_key(ip), r.integer(info.get("asn")))
    return result


def address_facts(test_keys: Mapping[str, Any], url: str, control: r.Entry | None) -> AddressFacts:
    """Collect ASNs and TLS-validated addresses for the URL's host from the record."""
    host = url_host(url)
    asn: dict[str, int] = {}
    _asns_from_answers(test_keys, asn)
    validated = _probe_validated(test_keys, host)
    if control is not None:
        validated |= _control_validated(control, host, asn)
    return AddressFacts(asn=asn, validated=frozenset(validated))


def lookup_verdict(measured: frozenset[str], control: frozenset[str],
                   facts: AddressFacts) -> tuple[bool, str]:
    """(valid, rule): IP intersection; then, with ASNs known for both the probe's and the
    control's addresses, ASN intersection (OONI's exact rule); else an address validated by
    TLS for the URL's host (our stand-in for the ASN match)."""
    if (measured & control) - {""}:
        return True, RULE_IP
    probe_asns, control_asns = facts.asns(measured), facts.asns(control)
    if probe_asns and control_asns:
        return bool(probe_asns & control_asns), RULE_ASN
    return bool(measured & facts.validated), RULE_TLS


def lookup_is_valid(measured: frozenset[str], control: frozenset[str], facts: AddressFacts) -> bool:
    """Whether the lookup's answers are consistent with the control's (:func:`lookup_verdict`)."""
    return lookup_verdict(measured, control, facts)[0]


def weakest_rule(rules: set[str]) -> str:
    """The rule to report for several lookups: the least certain one that was used."""
    return max(rules, key=_RULE_STRENGTH.index) if rules else RULE_FAILURE


@dataclass(slots=True)
class WebAnalysis:
    """The metric sets OONI's classic and extended analyses read."""

    expectations: ControlExpectations | None = None
    dns_success: set[int] = field(default_factory=set)
    dns_valid: set[int] = field(default_factory=set)
    dns_invalid: set[int] = field(default_factory=set)
    dns_bogon: set[int] = field(default_factory=set)
    dns_unexpected_failure: set[int] = field(default_factory=set)
    dns_unexplained_failure: set[int] = field(default_factory=set)
    dns_expected_failure: set[int] = field(default_factory=set)
    dns_rules: set[str] = field(default_factory=set)  # how each compared lookup was decided
    dns_experiment_failure: str | None = None
    tcp_unexpected: set[int] = field(default_factory=set)
    tcp_unexplained: set[int] = field(default_factory=set)
    tls_unexpected: set[int] = field(default_factory=set)
    tls_unexplained: set[int] = field(default_factory=set)
    http_unexpected: set[int] = field(default_factory=set)
    http_unexplained: set[int] = field(default_factory=set)
    final_kind: str | None = None  # "tls"|"tcp" + "_control"|"_nocontrol"
    body_proportion: float | None = None
    status_code_match: bool | None = None
    uncommon_headers: frozenset[str] | None = None
    title_different_words: frozenset[str] | None = None


def _first_per_lookup(observations: list[Obs]) -> list[Obs]:
    seen: set[int] = set()
    result = []
    for obs in observations:
        txid = obs.dns_txid or 0
        if txid not in seen:
            seen.add(txid)
            result.append(obs)
    return result


def dns_success_metrics(wa: WebAnalysis, box: Container, facts: AddressFacts, *,
                        undo: bool) -> None:
    """Valid/invalid/bogon depth-0 lookups; ``undo`` re-validates lookups a handshake used."""
    for obs in _first_per_lookup(box.dns_successes):
        txid = obs.dns_txid or 0
        if obs.depth != 0:
            continue
        wa.dns_success.add(txid)
        if obs.ip_bogon:
            wa.dns_bogon.add(txid)
        if obs.ctrl_dns_addrs is None:
            continue
        valid, rule = lookup_verdict(obs.dns_addrs or frozenset(), obs.ctrl_dns_addrs, facts)
        (wa.dns_valid if valid else wa.dns_invalid).add(txid)
        wa.dns_rules.add(rule)
    if undo:
        for obs in box.endpoints.values():
            if obs.tls_failure == "" and (obs.dns_txid or 0) > 0:
                wa.dns_invalid.discard(obs.dns_txid or 0)
                wa.dns_valid.add(obs.dns_txid or 0)


def _dns_failure_ignored(obs: Obs) -> bool:
    """DoH and DoT failures say nothing about the site; AAAA no-answer is normal
    (ooni/probe#2274)."""
    return obs.dns_engine in ("doh", "dot") or (obs.dns_query_type == "AAAA"
                                       and obs.dns_failure == failures.DNS_NO_ANSWER)


def _classify_dns_failure(wa: WebAnalysis, obs: Obs, txid: int) -> None:
    probe, ctrl = obs.dns_failure or "", obs.ctrl_dns_failure
    if ctrl is None or (ctrl and not probe):
        return
    no_answer_both = probe == failures.DNS_NO_ANSWER and obs.ctrl_dns_addrs is not None \
        and not obs.ctrl_dns_addrs
    if (probe and ctrl) or no_answer_both:
        wa.dns_expected_failure.add(txid)
    elif probe:
        wa.dns_unexpected_failure.add(txid)


def dns_failure_metrics(wa: WebAnalysis, box: Container) -> None:
    """Expected, unexpected and unexplained DNS failures; the first depth-0 failure."""
    for obs in _first_per_lookup(box.dns_failures):
        txid = obs.dns_txid or 0
        if _dns_failure_ignored(obs):
            continue
        if obs.depth != 0:
            if obs.dns_failure:
                wa.dns_unexplained_failure.add(txid)
            continue
        if obs.dns_failure and wa.dns_experiment_failure is None:
            wa.dns_experiment_failure = obs.dns_failure
        _classify_dns_failure(wa, obs, txid)


def _misconfigured_ipv6(obs: Obs) -> bool:
    """ooni/probe#2284: unreachable IPv6 is a broken probe network, not blocking."""
    return obs.tcp_failure in _MISCONFIGURED_V6 and ":" in (obs.ip or "")


def _endpoint_metric(probe: str | None, ctrl: str | None, depth: int | None,
                     unexpected: set[int], unexplained: set[int], txid: int) -> None:
    if probe is None:
        return
    if depth != 0:
        if probe:
            unexplained.add(txid)
        return
    if ctrl is None or ctrl:
        return
    if probe:
        unexpected.add(txid)


def endpoint_metrics(wa: WebAnalysis, box: Container) -> None:
    """Unexpected (control OK) and unexplained (after a redirect) TCP/TLS/HTTP failures."""
    for txid, obs in box.endpoints.items():
        if not _misconfigured_ipv6(obs):
            _endpoint_metric(obs.tcp_failure, obs.ctrl_tcp_failure, obs.depth,
                             wa.tcp_unexpected, wa.tcp_unexplained, txid)
        _endpoint_metric(obs.tls_failure, obs.ctrl_tls_failure, obs.depth,
                         wa.tls_unexpected, wa.tls_unexplained, txid)
        if obs.http_failure is None:
            continue
        if obs.ctrl_http_failure is None:
            if obs.http_failure:
                wa.http_unexplained.add(txid)
        elif obs.http_failure and not obs.ctrl_http_failure:
            wa.http_unexpected.add(txid)


def final_response(box: Container) -> Obs | None:
    """The final (2xx/4xx/5xx) response; deepest first if a record somehow has several."""
    finals = [obs for obs in box.endpoints.values() if obs.http_is_final]
    finals.sort(key=lambda obs: (-(obs.depth if obs.depth is not None else -1), obs.transaction_id))
    return finals[0] if finals else None


def final_response_metrics(wa: WebAnalysis, box: Container) -> None:
    """Classify the final response and compute the HTTP-diff inputs against the control."""
    obs = final_response(box)
    if obs is None:
        return
    transport = "tls" if obs.tls_failure is not None else "tcp"
    if obs.ctrl_http_failure is None:
        wa.final_kind = transport + "_nocontrol"
        return
    wa.final_kind = transport + "_control"
    measured, control = obs.http_body_length or 0, obs.ctrl_http_body_length or 0
    if measured > 0 and obs.http_body_truncated is False and control > 0:
        wa.body_proportion = body_proportion_factor(measured, control)
    if (obs.http_status or 0) > 0 and (obs.ctrl_http_status or 0) > 0:
        wa.status_code_match = status_code_match(obs.http_status or 0, obs.ctrl_http_status or 0)
    if (obs.ctrl_http_status or 0) > 0:
        wa.uncommon_headers = uncommon_headers_intersection(
            obs.http_header_keys or frozenset(), obs.ctrl_http_header_keys or frozenset())
        wa.title_different_words = title_different_long_words(
            obs.http_title or "", obs.ctrl_http_title or "")


def analyze_container(box: Container, facts: AddressFacts, *, classic: bool) -> WebAnalysis:
    """All metrics for one container (``classic`` = the v0.4-compatible variant)."""
    wa = WebAnalysis(expectations=box.expectations)
    dns_success_metrics(wa, box, facts, undo=not classic)
    dns_failure_metrics(wa, box)
    endpoint_metrics(wa, box)
    final_response_metrics(wa, box)
    return wa
