"""Flat web observations: a port of OONI's ``internal/minipipeline`` (observation.go, classic.go).

Each :class:`Obs` follows one flow from a DNS answer through TCP, TLS and HTTP, with the
control's view of the same step beside it. OONI's Web Connectivity LTE computes its keys
from these; we port the ingestion so a kzprobe record and an OONI record of the same event
get the same ``blocking``/``accessible``.

Failure strings follow the minipipeline: ``None`` = no information, ``""`` = success.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import idna

from kzprobe.bogons import IPNetwork, is_bogon
from kzprobe.verdict.analysis import records as r

DNS, TCP, TLS, HTTP = 0, 1, 2, 3  # WebObservationType, in OONI's order
ORIGIN_DNS, ORIGIN_TH = "dns", "th"
_TITLE = re.compile(r"(?i)<title>([^<]{1,512})</title>")
_TITLE_SCAN_LIMIT = 1 << 20


@dataclass(slots=True)
class Obs:
    """One web observation (OONI's WebObservation); mutable only while it is being built."""

    type: int
    failure: str | None
    transaction_id: int = 0
    depth: int | None = None
    fetch_body: bool | None = None
    dns_txid: int | None = None
    dns_domain: str | None = None
    dns_failure: str | None = None
    dns_query_type: str | None = None
    dns_engine: str | None = None
    dns_classic: bool = False
    dns_addrs: frozenset[str] | None = None
    ip_origin: str | None = None
    ip: str | None = None
    ip_bogon: bool | None = None
    endpoint_address: str | None = None
    tcp_failure: str | None = None
    tls_failure: str | None = None
    tls_server_name: str | None = None
    http_failure: str | None = None
    http_status: int | None = None
    http_body_length: int | None = None
    http_body_truncated: bool | None = None
    http_header_keys: frozenset[str] | None = None
    http_title: str | None = None
    http_is_final: bool | None = None
    ctrl_dns_failure: str | None = None
    ctrl_dns_addrs: frozenset[str] | None = None
    ctrl_tcp_failure: str | None = None
    ctrl_tls_failure: str | None = None
    ctrl_http_failure: str | None = None
    ctrl_http_status: int | None = None
    ctrl_http_body_length: int | None = None
    ctrl_http_header_keys: frozenset[str] | None = None
    ctrl_http_title: str | None = None


@dataclass(frozen=True, slots=True)
class ControlExpectations:
    """What the control says about the whole URL."""

    dns_addrs: frozenset[str]
    final_failure: str


@dataclass(slots=True)
class Container:
    """All observations of one measurement (OONI's WebObservationsContainer)."""

    dns_failures: list[Obs] = field(default_factory=list)
    dns_successes: list[Obs] = field(default_factory=list)
    endpoints: dict[int, Obs] = field(default_factory=dict)
    expectations: ControlExpectations | None = None
    known_ips: dict[str, Obs] = field(default_factory=dict)


def ip_key(value: str) -> str:
    """Canonical text for an address so ``::ffff:1.2.3.4``-style spellings compare equal."""
    return r.canonical_ip(value) or value


def is_classic_query(query: r.Entry) -> bool:
    """System-resolver lookups, or the lookups the probe tagged ``classic`` (first resolver)."""
    system = query.get("engine") in ("getaddrinfo", "golang_net_resolver")
    return system or "classic" in r.tags(query)


def _dns_obs(query: r.Entry, failure: str) -> Obs:
    txid = r.integer(query.get("transaction_id"))
    return Obs(
        type=DNS, failure=failure, transaction_id=txid, depth=r.tag_depth(query),
        dns_txid=txid, dns_domain=r.text(query.get("hostname")) or "", dns_failure=failure,
        dns_query_type=r.text(query.get("query_type")) or "",
        dns_engine=r.text(query.get("engine")) or "", dns_classic=is_classic_query(query),
    )


def ingest_dns(box: Container, queries: Iterable[r.Entry],
               not_bogon: tuple[IPNetwork, ...]) -> None:
    """Failed lookups become one observation each; successful ones, one per address."""
    for query in queries:
        if isinstance(query.get("failure"), str):
            box.dns_failures.append(_dns_obs(query, r.failure(query)))
            continue
        addrs = sorted({ip_key(a) for a in r.answer_addresses(query)})
        for ip in addrs:
            obs = _dns_obs(query, "")
            obs.dns_addrs, obs.ip_origin, obs.ip = frozenset(addrs), ORIGIN_DNS, ip
            obs.ip_bogon = is_bogon(ip, not_bogon=not_bogon)
            box.dns_successes.append(obs)
            box.known_ips.setdefault(ip, obs)


def ingest_tcp(box: Container, events: Iterable[r.Entry], not_bogon: tuple[IPNetwork, ...]) -> None:
    """One endpoint observation per connect, inheriting the DNS lookup that found its address."""
    for event in events:
        ip = ip_key(r.text(event.get("ip")) or "")
        port = r.integer(event.get("port"))
        status = r.mapping(event.get("status"))
        fail = r.failure(status)
        base = box.known_ips.get(ip)
        txid = r.integer(event.get("transaction_id"))
        box.endpoints[txid] = Obs(
            type=TCP, failure=fail, transaction_id=txid, depth=r.tag_depth(event),
            fetch_body=r.tag_fetch_body(event),
            dns_txid=base.dns_txid if base else None,
            dns_domain=base.dns_domain if base else None,
            dns_failure=base.dns_failure if base else None,
            dns_addrs=base.dns_addrs if base else None,
            ip_origin=base.ip_origin if base else None, ip=ip,
            ip_bogon=is_bogon(ip, not_bogon=not_bogon),
            endpoint_address=r.join_endpoint(ip, port), tcp_failure=fail,
        )


def ingest_tls(box: Container, events: Iterable[r.Entry]) -> None:
    """A handshake upgrades its endpoint observation (matched by transaction id)."""
    for event in events:
        obs = box.endpoints.get(r.integer(event.get("transaction_id")))
        if obs is None:
            continue
        obs.type, obs.failure = TLS, r.failure(event)
        obs.tls_failure, obs.tls_server_name = obs.failure, r.text(event.get("server_name")) or ""


def web_title(body: bytes) -> str:
    """The page ``<title>`` as OONI's measurexlite.WebGetTitle extracts it."""
    match = _TITLE.search(body[:_TITLE_SCAN_LIMIT].decode("utf-8", "replace"))
    return match.group(1) if match else ""


def _set_response(obs: Obs, response: r.Entry) -> None:
    code = r.integer(response.get("code"))
    obs.http_status = code
    obs.http_body_length = len(r.body_bytes(response.get("body")))
    obs.http_body_truncated = response.get("body_is_truncated") is True
    obs.http_header_keys = frozenset(r.header_map(response.get("headers")))
    obs.http_title = web_title(r.body_bytes(response.get("body")))
    obs.http_is_final = code // 100 in (2, 4, 5)


def ingest_http(box: Container, events: Iterable[r.Entry]) -> None:
    """A round trip upgrades its endpoint; only a successful one carries response facts."""
    for event in events:
        obs = box.endpoints.get(r.integer(event.get("transaction_id")))
        if obs is None:
            continue
        obs.type, obs.failure = HTTP, r.failure(event)
        obs.http_failure = obs.failure
        if not isinstance(event.get("failure"), str):
            _set_response(obs, r.mapping(event.get("response")))


def ingest_measurement(test_keys: Mapping[str, Any], not_bogon: tuple[IPNetwork, ...]) -> Container:
    """Build the container from test keys (DNS first, then TCP, TLS and HTTP, as OONI)."""
    box = Container()
    ingest_dns(box, r.entries(test_keys.get("queries")), not_bogon)
    ingest_tcp(box, r.entries(test_keys.get("tcp_connect")), not_bogon)
    ingest_tls(box, r.entries(test_keys.get("tls_handshakes")))
    ingest_http(box, r.tcp_requests(test_keys))
    return box


def control_of(test_keys: Mapping[str, Any]) -> r.Entry | None:
    """The control response, or None when there is none or it failed."""
    control = test_keys.get("control")
    if not isinstance(control, Mapping) or isinstance(test_keys.get("control_failure"), str):
        return None
    return control


def url_host(url: str) -> str:
    """The URL's host as the probe looks it up: no brackets or port, lower case, punycode."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return host.lower()


def _control_dns(control: r.Entry) -> tuple[str, frozenset[str]]:
    dns = r.mapping(control.get("dns"))
    addrs = dns.get("addrs")
    values = [ip_key(a) for a in addrs if isinstance(a, str)] if isinstance(addrs, list) else []
    return r.failure(dns), frozenset(values)


def _set_control_dns(obs: Obs, fail: str, addrs: frozenset[str]) -> None:
    obs.ctrl_dns_failure = fail
    if fail == "":
        obs.ctrl_dns_addrs = addrs


def xref_control_dns(box: Container, domain: str, control: r.Entry) -> None:
    """Attach the control's DNS result to lookups and endpoints for the same domain."""
    fail, addrs = _control_dns(control)
    for obs in [*box.dns_failures, *box.dns_successes]:
        if obs.dns_domain == domain:
            _set_control_dns(obs, fail, addrs)
    for obs in box.endpoints.values():
        if not obs.dns_domain and obs.ip in addrs:
            obs.ip_origin, obs.ctrl_dns_failure, obs.ctrl_dns_addrs = ORIGIN_TH, fail, addrs
        elif obs.dns_domain and obs.dns_domain == domain:
            _set_control_dns(obs, fail, addrs)


def _control_map(control: r.Entry, key: str) -> dict[str, r.Entry]:
    result: dict[str, r.Entry] = {}
    for address, value in r.mapping(control.get(key)).items():
        parts = r.split_endpoint(address)
        if parts is not None and isinstance(value, Mapping):
            result[r.join_endpoint(*parts)] = value
    return result


def xref_control_endpoints(box: Container, control: r.Entry) -> None:
    """Attach the control's TCP and TLS results to the same ``ip:port`` (and same SNI)."""
    tcp, tls = _control_map(control, "tcp_connect"), _control_map(control, "tls_handshake")
    for obs in box.endpoints.values():
        key = obs.endpoint_address or ""
        if key in tcp:
            obs.ctrl_tcp_failure = r.failure(tcp[key])
        entry = tls.get(key)
        if obs.tls_server_name is not None and entry is not None \
                and entry.get("server_name") == obs.tls_server_name:
            obs.ctrl_tls_failure = r.failure(entry)


def _set_control_http(obs: Obs, http: r.Entry) -> None:
    obs.ctrl_http_failure = r.failure(http)
    if obs.ctrl_http_failure:
        return
    obs.ctrl_http_status = r.integer(http.get("status_code"))
    obs.ctrl_http_body_length = r.integer(http.get("body_length"))
    obs.ctrl_http_header_keys = frozenset(r.header_map(http.get("headers")))
    obs.ctrl_http_title = r.text(http.get("title")) or ""


def ingest_control(box: Container, url: str, control: r.Entry) -> None:
    """Cross-reference the control with every observation (OONI's IngestControlMessages)."""
    domain = url_host(url)
    xref_control_dns(box, domain, control)
    xref_control_endpoints(box, control)
    http = r.mapping(control.get("http_request"))
    _, addrs = _control_dns(control)
    box.expectations = ControlExpectations(dns_addrs=addrs, final_failure=r.failure(http))
    for obs in [*box.dns_failures, *box.dns_successes, *box.endpoints.values()]:
        _set_control_http(obs, http)


def _keep_classic_endpoint(obs: Obs, classic_ips: Mapping[str, Obs]) -> bool:
    if obs.ip_origin == ORIGIN_TH:
        return False
    if obs.ip_origin == ORIGIN_DNS and (obs.ip or "") not in classic_ips:
        return False
    return obs.fetch_body is not False  # OONI drops untagged flows; ours may lack the tag


def classic_filter(box: Container) -> Container:
    """Keep only lookups from the primary resolver and endpoints using their addresses."""
    out = Container(expectations=box.expectations)
    out.dns_failures = [obs for obs in box.dns_failures if obs.dns_classic]
    for obs in box.dns_successes:
        if obs.dns_classic:
            out.dns_successes.append(obs)
            out.known_ips[obs.ip or ""] = obs
    out.endpoints = {txid: obs for txid, obs in box.endpoints.items()
                     if _keep_classic_endpoint(obs, out.known_ips)}
    return out
