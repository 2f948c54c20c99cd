"""kzprobe's mechanism taxonomy: which interference a measurement shows, and how.

OONI's ``blocking`` gives one reason per measurement. kzprobe lists every mechanism it has
evidence for (a DNS lie *and* an SNI reset on the real addresses are both listed). A code
needs evidence that the failure is not the site's own: the control (the helper outside the
country) succeeded at the same step, or the evidence proves itself.

The codes, when each is set, and what ``sni_blocking_confirmed`` means are written once,
in the README's "Verdicts" section (``tests/test_docs_tables.py`` checks the table against
:data:`CODES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kzprobe import failures
from kzprobe.bogons import IPNetwork, is_bogon, to_address
from kzprobe.verdict.analysis import records as r
from kzprobe.verdict.analysis.certs import known_interception_ca, leaf_issuer_cn
from kzprobe.verdict.analysis.fingerprints import FingerprintSet, Match, match_dns, match_http
from kzprobe.verdict.analysis.observations import control_of, ip_key, url_host
from kzprobe.verdict.analysis.quic import CODES as QUIC_CODES
from kzprobe.verdict.analysis.quic import quic_codes
from kzprobe.verdict.analysis.webanalysis import AddressFacts, address_facts, lookup_is_valid
from kzprobe.verdict.analysis.webconnectivity import Blocking, OoniKeys

if TYPE_CHECKING:  # kzprobe.config pulls in the I/O stack; the analysis must stay pure
    from kzprobe.config import AnalysisConfig

CODES = (
    "dns.nxdomain", "dns.no_answer", "dns.servfail", "dns.timeout", "dns.bogon",
    "dns.inconsistent", "dns.blockpage", "tcp.timeout", "tcp.refused", "tcp.reset",
    "tls.reset", "tls.timeout", "tls.eof", "tls.mitm", "http.reset", "http.timeout",
    "http.eof", "http.blockpage", "http.diff", "throttling", *QUIC_CODES,
)
DNS_FAILURES = {
    failures.DNS_NXDOMAIN_ERROR: "dns.nxdomain", failures.DNS_NO_ANSWER: "dns.no_answer",
    failures.DNS_SERVFAIL_ERROR: "dns.servfail", failures.DNS_REFUSED_ERROR: "dns.servfail",
    failures.GENERIC_TIMEOUT_ERROR: "dns.timeout",
}
TCP_FAILURES = {failures.GENERIC_TIMEOUT_ERROR: "tcp.timeout",
                failures.CONNECTION_REFUSED: "tcp.refused", failures.CONNECTION_RESET: "tcp.reset"}
TLS_FAILURES = {failures.CONNECTION_RESET: "tls.reset",
                failures.GENERIC_TIMEOUT_ERROR: "tls.timeout", failures.EOF_ERROR: "tls.eof"}
HTTP_FAILURES = {failures.CONNECTION_RESET: "http.reset",
                 failures.GENERIC_TIMEOUT_ERROR: "http.timeout", failures.EOF_ERROR: "http.eof"}
SNI_CONFIRMABLE = frozenset({*TLS_FAILURES, failures.SSL_UNKNOWN_AUTHORITY})
BODY_WINDOW = 64 * 1024  # bytes per throughput sample (about one congestion window)


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    """Thresholds and local facts the verdict depends on."""

    throttle_min_seconds: float = 2.0
    throttle_factor: float = 5.0
    not_bogon: tuple[IPNetwork, ...] = ()
    probe_cc: str = "ZZ"

    @classmethod
    def from_config(cls, config: AnalysisConfig, *, probe_cc: str) -> AnalysisParams:
        """Params from ``[analysis]`` plus the probe's country code."""
        return cls(throttle_min_seconds=config.throttle_min_seconds,
                   throttle_factor=config.throttle_factor,
                   not_bogon=tuple(config.not_bogon), probe_cc=probe_cc)


@dataclass(frozen=True, slots=True)
class InterferenceResult:
    """kzprobe's verdict keys for one measurement."""

    codes: tuple[str, ...] = ()
    blockpage: str | None = None
    tls_mitm_issuer: str | None = None
    x_tls_mitm_known: str | None = None
    sni_blocking_confirmed: bool | None = None
    blocking: Blocking = None
    blockpage_match: Match | None = None

    def as_dict(self) -> dict[str, Any]:
        """The kzprobe keys as they go into ``test_keys``."""
        return {"interference": list(self.codes), "blockpage": self.blockpage,
                "tls_mitm_issuer": self.tls_mitm_issuer,
                "x_tls_mitm_known": self.x_tls_mitm_known,
                "sni_blocking_confirmed": self.sni_blocking_confirmed}


def verdict_key(result: InterferenceResult) -> tuple[Blocking, tuple[str, ...]]:
    """What "the same verdict" means when comparing retries: OONI blocking plus the codes."""
    return (result.blocking, result.codes)


# ----------------------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class Control:
    """The control's view, keyed the way probe events are."""

    present: bool = False
    domain: str = ""
    dns_ok: bool = False
    addrs: frozenset[str] = frozenset()
    tcp: Mapping[str, bool] = field(default_factory=dict)
    tls: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    http_ok: bool = False


def _endpoint_statuses(control: r.Entry, key: str) -> dict[str, r.Entry]:
    result = {}
    for address, value in r.mapping(control.get(key)).items():
        parts = r.split_endpoint(address)
        if parts is not None and isinstance(value, Mapping):
            result[r.join_endpoint(*parts)] = value
    return result


def read_control(test_keys: Mapping[str, Any], domain: str) -> Control:
    """The control response as a :class:`Control` (empty when missing or failed)."""
    control = control_of(test_keys)
    if control is None:
        return Control(domain=domain)
    dns = r.mapping(control.get("dns"))
    raw = dns.get("addrs")
    values = raw if isinstance(raw, list) else []
    addrs = frozenset(ip_key(a) for a in values if isinstance(a, str))
    tcp = {k: v.get("status") is True
           for k, v in _endpoint_statuses(control, "tcp_connect").items()}
    tls = {k: (str(v.get("server_name", "")), v.get("status") is True)
           for k, v in _endpoint_statuses(control, "tls_handshake").items()}
    http = r.mapping(control.get("http_request"))
    return Control(present=True, domain=domain, dns_ok=r.failure(dns) == "" and bool(addrs),
                   addrs=addrs, tcp=tcp, tls=tls,
                   http_ok=bool(http) and not isinstance(http.get("failure"), str))


@dataclass(frozen=True, slots=True)
class Context:
    """Everything the rules read, built once per measurement."""

    keys: Mapping[str, Any]
    control: Control
    params: AnalysisParams
    facts: AddressFacts
    fingerprints: FingerprintSet
    url_host: str


def measured_url(test_keys: Mapping[str, Any]) -> str:
    """The measured URL: the first hop's request URL (requests[] is newest first)."""
    requests = r.tcp_requests(test_keys)
    if requests:
        return r.text(r.mapping(requests[-1].get("request")).get("url")) or ""
    return ""


def measured_host(test_keys: Mapping[str, Any], url: str | None) -> str:
    """The input URL's host: from ``url``, else depth-0 lookups, else the first request."""
    if url:
        return url_host(url)
    for query in r.entries(test_keys.get("queries")):
        if r.tag_depth(query) in (0, None) and isinstance(query.get("hostname"), str):
            return str(query["hostname"])
    return url_host(measured_url(test_keys))


# ----------------------------------------------------------------------------- DNS rules


def _family_resolved(ctx: Context, query_type: Any) -> bool:
    versions = {address.version for a in ctx.control.addrs
                if (address := to_address(a)) is not None}
    wanted = {"A": 4, "AAAA": 6}.get(str(query_type))
    return bool(versions) if wanted is None else wanted in versions


def control_resolves(ctx: Context, query: r.Entry) -> bool:
    """The control says this name resolves (depth 0) or its page loads (redirect hosts)."""
    if r.tag_depth(query) in (0, None) and query.get("hostname") == ctx.control.domain:
        return ctx.control.dns_ok and _family_resolved(ctx, query.get("query_type"))
    return ctx.control.http_ok


def _lookups(ctx: Context) -> list[r.Entry]:
    return [q for q in r.entries(ctx.keys.get("queries")) if q.get("engine") not in ("doh", "dot")]


def dns_failure_codes(ctx: Context) -> set[str]:
    """NXDOMAIN, no-answer, SERVFAIL/REFUSED and timeouts the control did not see.

    An empty answer for one address family is no failure of a name that another lookup
    resolved (a v4-only site has no AAAA records), at any redirect depth.
    """
    lookups = _lookups(ctx)
    resolved = {q.get("hostname") for q in lookups if _answers(q)}
    codes = set()
    for query in lookups:
        failure = r.failure(query)
        if failure == failures.DNS_NO_ANSWER and query.get("hostname") in resolved:
            continue
        code = DNS_FAILURES.get(failure)
        if code and control_resolves(ctx, query):
            codes.add(code)
    return codes


def _answers(query: r.Entry) -> list[str]:
    if isinstance(query.get("failure"), str):
        return []
    return [ip_key(a) for a in r.answer_addresses(query)]


def bogon_answers(ctx: Context, query: r.Entry) -> set[str]:
    """This lookup's bogon answers that some other source contradicts."""
    bogons = {a for a in _answers(query) if is_bogon(a, not_bogon=ctx.params.not_bogon)}
    if not bogons:
        return set()
    public = {a for other in _lookups(ctx) if other is not query
              and other.get("hostname") == query.get("hostname") for a in _answers(other)}
    if ctx.control.dns_ok and query.get("hostname") == ctx.control.domain:
        public |= ctx.control.addrs
    public = {a for a in public if not is_bogon(a, not_bogon=ctx.params.not_bogon)}
    return bogons - (ctx.control.addrs if ctx.control.present else set()) if public else set()


def _null_answer(answer: str) -> bool:
    address = to_address(answer)
    return address is not None and (address.is_loopback or address.is_unspecified)


def dns_blockpage(ctx: Context, query: r.Entry) -> Match | None:
    """A known blocking answer (address or CNAME) in this lookup."""
    if isinstance(query.get("failure"), str):
        return None
    answers = [a for a in r.answer_addresses(query) if not _null_answer(a)]
    answers += [h for ans in r.entries(query.get("answers"))
                if isinstance(h := ans.get("hostname"), str)]
    return match_dns(ctx.fingerprints, answers, probe_cc=ctx.params.probe_cc)


def _inconsistent(ctx: Context, query: r.Entry) -> bool:
    answers = frozenset(_answers(query))
    if not answers or not ctx.control.dns_ok or r.tag_depth(query) not in (0, None) \
            or query.get("hostname") != ctx.control.domain:
        return False
    return not lookup_is_valid(answers, ctx.control.addrs, ctx.facts)


def dns_answer_codes(ctx: Context) -> tuple[set[str], Match | None]:
    """Bogon, blockpage and inconsistent answers; the first DNS blockpage match."""
    codes: set[str] = set()
    first: Match | None = None
    for query in _lookups(ctx):
        bogus, match = bogon_answers(ctx, query), dns_blockpage(ctx, query)
        if bogus:
            codes.add("dns.bogon")
        if match is not None:
            codes.add("dns.blockpage")
            first = first or match
        if not bogus and match is None and _inconsistent(ctx, query):
            codes.add("dns.inconsistent")
    return codes, first


# ----------------------------------------------------------------------------- TCP and TLS


def tcp_codes(ctx: Context) -> set[str]:
    """Connect failures to an ``ip:port`` the control reached."""
    codes = set()
    for event in r.entries(ctx.keys.get("tcp_connect")):
        code = TCP_FAILURES.get(r.failure(r.mapping(event.get("status"))))
        ip = r.canonical_ip(event.get("ip"))
        if code is None or ip is None:
            continue
        key = r.join_endpoint(ip, r.integer(event.get("port")))
        ok = ctx.control.tcp.get(key)
        redirected = r.tag_depth(event) not in (0, None)
        if ok is True or (ok is None and redirected and ctx.control.http_ok):
            codes.add(code)
    return codes


def _address(entry: r.Entry) -> str | None:
    parts = r.split_endpoint(entry.get("address"))
    return None if parts is None else r.join_endpoint(*parts)


def control_tls(ctx: Context, handshake: r.Entry) -> bool | None:
    """Did the control's handshake to this address with this SNI succeed? None: unknown."""
    entry = ctx.control.tls.get(_address(handshake) or "")
    if entry is not None and entry[0] == handshake.get("server_name"):
        return entry[1]
    if r.tag_depth(handshake) not in (0, None) and ctx.control.present:
        return ctx.control.http_ok
    return None


def benign_checks(ctx: Context) -> dict[str, r.Entry]:
    """The last benign-SNI check per address."""
    return {address: check for check in r.entries(ctx.keys.get("x_sni_checks"))
            if (address := _address(check)) is not None}


def reached_server(check: r.Entry) -> bool:
    """A handshake that completed or failed only verification got the server's reply."""
    fail = r.failure(check)
    return fail == "" or fail in failures.CERT_FAILURES


def tls_failure_codes(ctx: Context) -> set[str]:
    """Resets, timeouts and EOFs during the handshake that the control or an SNI check clears."""
    codes, checks = set(), benign_checks(ctx)
    for handshake in r.entries(ctx.keys.get("tls_handshakes")):
        code = TLS_FAILURES.get(r.failure(handshake))
        if code is None:
            continue
        ok = control_tls(ctx, handshake)
        check = checks.get(_address(handshake) or "")
        if ok is True or (ok is None and check is not None and reached_server(check)):
            codes.add(_reset_kind(code, check))
    return codes


def _reset_kind(code: str, check: r.Entry | None) -> str:
    """A reset that hits the benign-SNI handshake too does not depend on the name: it is
    aimed at the address (IP/port RST injection), so it is ``tcp.reset``, not ``tls.reset``."""
    if code == "tls.reset" and check is not None \
            and r.failure(check) == failures.CONNECTION_RESET:
        return "tcp.reset"
    return code


@dataclass(frozen=True, slots=True)
class Mitm:
    """Interception evidence: whether seen, the leaf's issuer CN, a known CA's name."""

    seen: bool = False
    issuer: str | None = None
    known: str | None = None


def mitm(ctx: Context) -> Mitm:
    """A known interception CA in a chain, or an untrusted chain where the control's was fine."""
    found = Mitm()
    for handshake in r.entries(ctx.keys.get("tls_handshakes")):
        chain = handshake.get("peer_certificates")
        known = known_interception_ca(chain)
        untrusted = r.failure(handshake) == failures.SSL_UNKNOWN_AUTHORITY \
            and control_tls(ctx, handshake) is True
        if known or untrusted:
            found = Mitm(True, leaf_issuer_cn(chain) or found.issuer, known or found.known)
    return found


# ----------------------------------------------------------------------------- SNI and timing


def _slow(seconds: float | None, reference: float | None, params: AnalysisParams) -> bool:
    if seconds is None or reference is None:
        return False
    return seconds > params.throttle_min_seconds and seconds > params.throttle_factor * reference


def handshake_evidence(ctx: Context) -> tuple[list[bool], bool]:
    """Per target handshake with a benign check: is SNI interference confirmed; throttled?"""
    confirmations, throttled, checks = [], False, benign_checks(ctx)
    for handshake in r.entries(ctx.keys.get("tls_handshakes")):
        check = checks.get(_address(handshake) or "")
        if check is None:
            continue
        fail, seconds = r.failure(handshake), r.duration(handshake)
        if fail in SNI_CONFIRMABLE:
            confirmations.append(reached_server(check))
        elif fail == "" and seconds is not None and seconds > ctx.params.throttle_min_seconds:
            slow = reached_server(check) and _slow(seconds, r.duration(check), ctx.params)
            confirmations.append(slow)
            throttled = throttled or slow
    return confirmations, throttled


def _body_seconds_per_window(request: r.Entry) -> float | None:
    seconds = r.number(request.get("x_body_seconds"))
    length = r.number(request.get("x_body_length"))
    if seconds is None or length is None or length <= 0:
        return None
    return seconds / max(1, math.ceil(length / BODY_WINDOW))


def request_throttled(ctx: Context) -> bool:
    """Time to first byte or body pace far slower than the benign handshake to that address."""
    checks = benign_checks(ctx)
    for request in r.tcp_requests(ctx.keys):
        check = checks.get(_address(request) or "")
        if check is None or not reached_server(check):
            continue
        reference = r.duration(check)
        if _slow(r.number(request.get("x_ttfb")), reference, ctx.params) \
                or _slow(_body_seconds_per_window(request), reference, ctx.params):
            return True
    return False


# ----------------------------------------------------------------------------- HTTP


def _connection_ok(ctx: Context, request: r.Entry) -> bool:
    txid = request.get("transaction_id")
    address = _address(request)
    tcp = [e for e in r.entries(ctx.keys.get("tcp_connect"))
           if e.get("transaction_id") == txid and txid is not None]
    tls = [e for e in r.entries(ctx.keys.get("tls_handshakes"))
           if e.get("transaction_id") == txid and txid is not None]
    if not tcp and address is not None:
        tcp = [e for e in r.entries(ctx.keys.get("tcp_connect"))
               if r.canonical_ip(e.get("ip")) is not None
               and r.join_endpoint(r.canonical_ip(e.get("ip")) or "",
                                   r.integer(e.get("port"))) == address]
    return bool(tcp) and all(r.failure(r.mapping(e.get("status"))) == "" for e in tcp) \
        and all(r.failure(e) == "" for e in tls)


def http_failure_codes(ctx: Context) -> set[str]:
    """Request-stage resets, timeouts and EOFs while the control fetched the page."""
    if not ctx.control.http_ok:
        return set()
    return {code for request in r.tcp_requests(ctx.keys)
            if (code := HTTP_FAILURES.get(r.failure(request))) and _connection_ok(ctx, request)}


def _site_wrote(ctx: Context, request: r.Entry) -> bool:
    """A validated-TLS response from the input URL's own host: no middlebox could write it."""
    url = r.text(r.mapping(request.get("request")).get("url")) or ""
    return url.lower().startswith("https://") and url_host(url) == ctx.url_host


def http_blockpage(ctx: Context) -> Match | None:
    """The first hop (final first) whose body or headers match a blockpage fingerprint."""
    for request in r.tcp_requests(ctx.keys):
        response = r.mapping(request.get("response"))
        if isinstance(request.get("failure"), str) or not response or _site_wrote(ctx, request):
            continue
        body = r.body_bytes(response.get("body"))
        headers = r.header_map(response.get("headers"))
        match = match_http(ctx.fingerprints, body, headers, probe_cc=ctx.params.probe_cc)
        if match is not None:
            return match
    return None


# ----------------------------------------------------------------------------- entry point


def _context(test_keys: Mapping[str, Any], fingerprints: FingerprintSet, config: AnalysisParams,
             url: str | None) -> Context:
    host = measured_host(test_keys, url)
    full_url = url or measured_url(test_keys) or f"https://{host}/"
    control = read_control(test_keys, host)
    facts = address_facts(test_keys, full_url, control_of(test_keys))
    return Context(test_keys, control, config, facts, fingerprints, host)


def interference(test_keys: Mapping[str, Any], *, oo: OoniKeys, fingerprints: FingerprintSet,
                 config: AnalysisParams, url: str | None = None) -> InterferenceResult:
    """Every interference mechanism this measurement shows evidence of (see module table)."""
    ctx = _context(test_keys, fingerprints, config, url)
    dns_codes, dns_match = dns_answer_codes(ctx)
    codes = dns_codes | dns_failure_codes(ctx) | tcp_codes(ctx) | tls_failure_codes(ctx)
    codes |= http_failure_codes(ctx) | quic_codes(test_keys, control_of(test_keys))
    found = mitm(ctx)
    if found.seen:
        codes.add("tls.mitm")
    confirmations, throttled = handshake_evidence(ctx)
    if throttled or request_throttled(ctx):
        codes.add("throttling")
    page = http_blockpage(ctx)
    if page is not None:
        codes.add("http.blockpage")
    elif oo.blocking == "http-diff":
        codes.add("http.diff")
    if oo.accessible is True and not codes & {"http.blockpage", "http.diff"}:
        # Other addresses that led to the real page (a CDN, GeoDNS, an honest transparent
        # proxy) are a difference, not interference.
        codes.discard("dns.inconsistent")
    shown = page or dns_match
    return InterferenceResult(
        codes=tuple(sorted(codes)), blockpage=shown.name if shown else None,
        tls_mitm_issuer=found.issuer if found.seen else None, x_tls_mitm_known=found.known,
        sni_blocking_confirmed=any(confirmations) if confirmations else None,
        blocking=oo.blocking, blockpage_match=shown)
