"""OONI Web Connectivity LTE analysis keys (``analysisclassic.go`` + ``analysisext.go``).

:func:`analyze` reads recorded ``test_keys`` and returns the keys OONI's LTE (0.5.28) would
write for the same observations, so ``blocking``/``accessible`` agree between a kzprobe
record and an OONI record of the same event. The one deliberate deviation: where no ASN is
known (no ASN database on the probe or the helper), an address that a TLS handshake with the
URL's SNI validated (probe side, or the control's ``tls_handshake``/``ip_info`` flag 8)
counts as a consistent DNS answer; ``x_dns_consistency_rule`` says which rule decided.

Which lookups are "classic" (the v0.4-compatible view): the system resolver's
(``engine`` getaddrinfo) and any query tagged ``classic`` (kzprobe tags its first resolver's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kzprobe import failures
from kzprobe.bogons import IPNetwork, is_loopback
from kzprobe.verdict.analysis import records as r
from kzprobe.verdict.analysis.httpdiff import BODY_PROPORTION_THRESHOLD, http_diff
from kzprobe.verdict.analysis.observations import (
    DNS,
    HTTP,
    TCP,
    TLS,
    Container,
    Obs,
    classic_filter,
    control_of,
    ingest_control,
    ingest_measurement,
)
from kzprobe.verdict.analysis.webanalysis import (
    AddressFacts,
    WebAnalysis,
    address_facts,
    analyze_container,
    weakest_rule,
)

Blocking = str | bool | None

# x_blocking_flags bits (analysisext.go)
FLAG_DNS, FLAG_TCP_IP, FLAG_TLS, FLAG_HTTP, FLAG_HTTP_DIFF, FLAG_SUCCESS = 1, 2, 4, 8, 16, 32
# x_dns_flags bits
DNS_FLAG_BOGON, DNS_FLAG_UNEXPECTED_FAILURE, DNS_FLAG_UNEXPECTED_ADDRS = 1, 2, 4


@dataclass(frozen=True, slots=True)
class OoniKeys:
    """The Web Connectivity analysis keys for one measurement."""

    dns_consistency: str | None = None
    body_length_match: bool | None = None
    body_proportion: float = 0.0
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None
    blocking: Blocking = None
    accessible: bool | None = None
    http_experiment_failure: str | None = None
    x_blocking_flags: int = 0
    x_dns_flags: int = 0
    x_dns_consistency_rule: str | None = None  # ip | asn | tls | failure (webanalysis.RULE_*)

    def as_dict(self) -> dict[str, Any]:
        """The keys as they go into ``test_keys``."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _DiffKeys:
    body_length_match: bool | None
    body_proportion: float
    status_code_match: bool | None
    headers_match: bool | None
    title_match: bool | None

    def is_diff(self) -> bool:
        return http_diff(self.status_code_match, self.body_length_match, self.headers_match,
                         self.title_match)


def diff_keys(wa: WebAnalysis) -> _DiffKeys:
    """The HTTP comparison keys from the final-response metrics."""
    proportion = wa.body_proportion
    return _DiffKeys(
        body_length_match=None if proportion is None else proportion > BODY_PROPORTION_THRESHOLD,
        body_proportion=proportion or 0.0,
        status_code_match=wa.status_code_match,
        headers_match=None if wa.uncommon_headers is None else bool(wa.uncommon_headers),
        title_match=(None if wa.title_different_words is None
                     else not wa.title_different_words),
    )


def dns_consistency(wa: WebAnalysis) -> str | None:
    """``consistent``/``inconsistent``/None from the classic lookups (analysisclassic.go)."""
    if not wa.dns_unexpected_failure and not wa.dns_invalid \
            and (wa.dns_valid or wa.dns_expected_failure):
        return "consistent"
    ghost = bool(wa.dns_success) and wa.expectations is not None \
        and not wa.expectations.dns_addrs
    if wa.dns_invalid or wa.dns_unexpected_failure or ghost:
        return "inconsistent"
    return None


def consistency_rule(wa: WebAnalysis, consistency: str | None) -> str | None:
    """Which rule decided ``dns_consistency`` (None when it is None)."""
    return None if consistency is None else weakest_rule(wa.dns_rules)


def _sort_key(obs: Obs) -> tuple[int, int, str, int]:
    depth = obs.depth if obs.depth is not None else -1
    failure = obs.failure if obs.failure is not None else failures.UNKNOWN_FAILURE
    return (-depth, -obs.type, failure, -obs.transaction_id)


def linear(box: Container) -> list[Obs]:
    """Deepest redirect first, then HTTP > TLS > TCP > DNS, successes first (analysis.go)."""
    observations = [*box.dns_failures, *box.dns_successes, *box.endpoints.values()]
    # Python sorts strings by code point, Go by bytes: the same order for UTF-8 text.
    return sorted(observations, key=_sort_key)


@dataclass(frozen=True, slots=True)
class _Verdict:
    blocking: Blocking
    accessible: bool | None
    failure: str | None = None


class _Decider:
    """OONI's setBlocking* helpers: DNS inconsistency overrides most verdicts with ``dns``."""

    def __init__(self, consistency: str | None) -> None:
        self.inconsistent = consistency == "inconsistent"

    def false(self, failure: str | None = None) -> _Verdict:
        return _Verdict(False, True, failure)

    def nil(self, failure: str | None = None) -> _Verdict:
        if self.inconsistent:
            return _Verdict("dns", False, failure)
        return _Verdict(None, None, failure)

    def string(self, value: str, failure: str | None = None) -> _Verdict:
        return _Verdict("dns" if self.inconsistent else value, False, failure)

    def down(self, failure: str | None = None) -> _Verdict:
        return _Verdict("dns" if self.inconsistent else False, False, failure)


def _final_response(obs: Obs, set_: _Decider, diff: _DiffKeys) -> _Verdict:
    if obs.tls_failure == "":
        return set_.false()
    if obs.ctrl_http_failure is None:
        return set_.nil()
    return set_.string("http-diff") if diff.is_diff() else set_.false()


def _endpoint_failure(obs: Obs, ctrl: str | None, set_: _Decider, label: str) -> _Verdict:
    """Rules 3 and 4: a failed TLS handshake or TCP connect."""
    if ctrl is None:
        if obs.ctrl_http_failure is None:
            return set_.nil(obs.failure)
        return set_.string("http-failure", obs.failure)
    if ctrl:
        return set_.down(obs.failure)
    return set_.string(label, obs.failure)


def _dns_failure(obs: Obs, set_: _Decider) -> _Verdict:
    """Rule 5. Without any control OONI says ``false/true`` here (5.1.1); we keep that."""
    if obs.ctrl_dns_failure is None:
        if obs.ctrl_http_failure is None:
            return set_.false(obs.failure)
        return set_.string("dns", obs.failure)
    if obs.ctrl_dns_failure:
        return set_.down(obs.failure)
    if obs.failure == failures.DNS_NO_ANSWER and obs.ctrl_dns_addrs is not None \
            and not obs.ctrl_dns_addrs:
        return set_.down()
    return set_.string("dns", obs.failure)


def _only_loopback(addrs: frozenset[str] | None) -> bool:
    ips = [ip for ip in addrs or () if r.canonical_ip(ip) is not None]
    return bool(ips) and all(is_loopback(ip) for ip in ips)


def _dns_success(obs: Obs, set_: _Decider) -> _Verdict | None:
    """Rules 6 and 7: the probe got only loopback addresses."""
    if obs.ctrl_dns_failure != "" or obs.dns_addrs is None or obs.ctrl_dns_addrs is None:
        return None
    if not _only_loopback(obs.dns_addrs):
        return None
    return set_.down() if _only_loopback(obs.ctrl_dns_addrs) else set_.string("dns")


def _decide_one(obs: Obs, set_: _Decider, diff: _DiffKeys) -> _Verdict | None:
    failed = bool(obs.failure)
    if obs.http_is_final:
        return _final_response(obs, set_, diff)
    if obs.type == HTTP and failed:
        if obs.ctrl_http_failure is None:
            return set_.nil(obs.failure)
        return set_.down(obs.failure) if obs.ctrl_http_failure else \
            set_.string("http-failure", obs.failure)
    if obs.type == TLS and failed:
        return _endpoint_failure(obs, obs.ctrl_tls_failure, set_, "http-failure")
    if obs.type == TCP and failed:
        return _endpoint_failure(obs, obs.ctrl_tcp_failure, set_, "tcp_ip")
    if obs.type == DNS and failed:
        return _dns_failure(obs, set_)
    if obs.type == DNS and obs.failure == "":
        return _dns_success(obs, set_)
    return None


def blocking_accessible(box: Container, consistency: str | None, diff: _DiffKeys) -> _Verdict:
    """The first observation that decides, walking :func:`linear` order."""
    set_ = _Decider(consistency)
    for obs in linear(box):
        verdict = _decide_one(obs, set_, diff)
        if verdict is not None:
            return verdict
    return _Verdict(None, None)


def _ext_dns_flags(wa: WebAnalysis) -> tuple[int, int]:
    dns_flags = DNS_FLAG_BOGON if wa.dns_bogon else 0
    blocking = 0
    if wa.dns_unexpected_failure:
        blocking |= FLAG_DNS
        dns_flags |= DNS_FLAG_UNEXPECTED_FAILURE
    if wa.dns_invalid:
        blocking |= FLAG_DNS
        dns_flags |= DNS_FLAG_UNEXPECTED_ADDRS
    return blocking, dns_flags


def _ext_endpoint_flags(wa: WebAnalysis) -> int:
    return ((FLAG_TCP_IP if wa.tcp_unexpected else 0) | (FLAG_TLS if wa.tls_unexpected else 0)
            | (FLAG_HTTP if wa.http_unexpected else 0))


def _ext_redirect_flags(wa: WebAnalysis) -> int:
    """Failures after a redirect count when the control fetched the final page."""
    if wa.final_kind is not None or wa.expectations is None or wa.expectations.final_failure:
        return 0
    return ((FLAG_DNS if wa.dns_unexplained_failure else 0)
            | (FLAG_TCP_IP if wa.tcp_unexplained else 0)
            | (FLAG_TLS if wa.tls_unexplained else 0)
            | (FLAG_HTTP if wa.http_unexplained else 0))


def _ext_final_flags(wa: WebAnalysis) -> int:
    if wa.final_kind in ("tls_nocontrol", "tls_control"):
        return FLAG_SUCCESS
    if wa.final_kind == "tcp_control":
        return FLAG_HTTP_DIFF if diff_keys(wa).is_diff() else FLAG_SUCCESS
    return 0


def extended_flags(wa: WebAnalysis) -> tuple[int, int]:
    """``(x_blocking_flags, x_dns_flags)`` over every observation, not only classic ones."""
    blocking, dns_flags = _ext_dns_flags(wa)
    blocking |= _ext_endpoint_flags(wa) | _ext_redirect_flags(wa) | _ext_final_flags(wa)
    return blocking, dns_flags


def _build(test_keys: Mapping[str, Any], url: str,
           not_bogon: tuple[IPNetwork, ...]) -> tuple[Container, AddressFacts]:
    box = ingest_measurement(test_keys, not_bogon)
    control = control_of(test_keys)
    if control is not None:
        ingest_control(box, url, control)
    return box, address_facts(test_keys, url, control)


def analyze(test_keys: Mapping[str, Any], *, url: str,
            not_bogon: Sequence[IPNetwork] = ()) -> OoniKeys:
    """OONI Web Connectivity LTE keys for recorded ``test_keys`` of ``url``."""
    box, facts = _build(test_keys, url, tuple(not_bogon))
    x_blocking, x_dns = extended_flags(analyze_container(box, facts, classic=False))
    classic = classic_filter(box)
    wa = analyze_container(classic, facts, classic=True)
    consistency = dns_consistency(wa)
    diff = diff_keys(wa)
    verdict = blocking_accessible(classic, consistency, diff)
    return OoniKeys(
        dns_consistency=consistency, body_length_match=diff.body_length_match,
        body_proportion=diff.body_proportion, status_code_match=diff.status_code_match,
        headers_match=diff.headers_match, title_match=diff.title_match,
        blocking=verdict.blocking, accessible=verdict.accessible,
        http_experiment_failure=verdict.failure, x_blocking_flags=x_blocking, x_dns_flags=x_dns,
        x_dns_consistency_rule=consistency_rule(wa, consistency),
    )
