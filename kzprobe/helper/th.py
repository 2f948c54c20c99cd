"""The helper's measurement: one ``THRequest`` in, one ``THResponse`` out.

The request's host is resolved once (the answer is ``dns`` and the experiment measures
it); endpoints are dialled and the page fetched with the probe's own flow steps
(:mod:`kzprobe.measure.flow`), then mapped to the test helper's vocabulary at this edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kzprobe import failures
from kzprobe.bogons import is_special_purpose
from kzprobe.config import Config
from kzprobe.geoip import GeoIP, open_geoip
from kzprobe.helper.policy import DialPolicy, prober_config
from kzprobe.measure.context import Stopwatch, close_transport
from kzprobe.measure.experiments.endpoint import EndpointExperiment
from kzprobe.measure.experiments.web_connectivity import (
    FetchLimits,
    Http3Mode,
    WebConnectivity,
)
from kzprobe.measure.flow import Measured, Resolution, dial, resolve, secure
from kzprobe.measure.loader import experiment_for
from kzprobe.measure.registry import UDP_SCHEMES
from kzprobe.measure.resources import build_resources
from kzprobe.measure.steps import tcp
from kzprobe.netaddr import join_hostport, split_hostport
from kzprobe.targets import Target, parse_target
from kzprobe.verdict.analysis.observations import web_title
from kzprobe.verdict.analysis.records import body_bytes

_HTTP_FAILURES = {failures.GENERIC_TIMEOUT_ERROR: failures.GENERIC_TIMEOUT_ERROR,
                  failures.CONNECTION_REFUSED: failures.TH_CONNECTION_REFUSED}
_DNS_SERVER_FAILURES = frozenset({
    failures.DNS_SERVFAIL_ERROR, failures.DNS_REFUSED_ERROR, failures.DNS_SERVER_MISBEHAVING,
    failures.DNS_TEMPORARY_FAILURE, failures.DNS_NON_RECOVERABLE_FAILURE})


class BadRequest(Exception):
    """A THRequest we cannot serve; answered with HTTP 400."""


def _split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """A probe-supplied ``host:port`` (IPv6 in brackets), port 0 refused."""
    parsed = split_hostport(endpoint)
    return parsed if parsed is not None and parsed[1] > 0 else None


def _th_dns(found: Resolution | None) -> tuple[list[str], str | None]:
    """THResponse ``dns``: the addresses and the failure (none for an IP host)."""
    if found is None:
        return [], None
    return found.addresses, _th_dns_failure(found.failure)


def _th_dns_failure(failure: str | None) -> str | None:
    """A resolve failure in the test helper's words (an empty answer is none)."""
    if failure is None or failure == failures.DNS_NO_ANSWER:
        return None
    if failure == failures.DNS_NXDOMAIN_ERROR:
        return failures.TH_DNS_NAME_ERROR
    if failure in _DNS_SERVER_FAILURES:
        return failures.TH_DNS_SERVER_FAILURE
    if failure == failures.GENERIC_TIMEOUT_ERROR:
        return failure
    return failures.TH_UNKNOWN_ERROR


def _th_connect_failure(failure: str | None) -> str | None:
    """A TCP connect failure in the test helper's words."""
    if failure is None or failure == failures.GENERIC_TIMEOUT_ERROR:
        return failure
    if failure == failures.CONNECTION_REFUSED:
        return failures.TH_CONNECTION_REFUSED
    return failures.CONNECT_ERROR


def _th_http_failure(failure: str) -> str:
    """The fetch's failure in the test helper's words (any DNS one is a lookup error)."""
    if failure.startswith("dns_"):
        return failures.TH_DNS_LOOKUP_ERROR
    return _HTTP_FAILURES.get(failure, failures.TH_UNKNOWN_ERROR)


class Helper:
    """Measures one THRequest from the helper's vantage point."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = DialPolicy(config.helper.allow_nets)
        self.resources = build_resources(prober_config(config), may_dial=self.policy,
                                         source_address=config.helper.bind_address)
        self.geo = open_geoip(config.geoip)  # ip_info asn, as OONI's helper fills it

    async def aclose(self) -> None:
        await self.resources.aclose()
        if self.geo is not None:
            self.geo.close()

    async def measure(self, request: Mapping[str, Any], client_ip: str,
                      limits: FetchLimits | None = None) -> dict[str, Any]:
        """The THResponse; ``limits`` bounds the bytes and ports of the site fetch."""
        target = _request_target(request)
        if target.port not in self.config.helper.allowed_ports:
            raise BadRequest(f"port {target.port} is not in this helper's allowed_ports")
        if target.is_endpoint:
            return await self.measure_endpoint(target, request, client_ip)
        clock = Stopwatch()
        found = await self._resolve(target, clock)
        addrs, dns_failure = _th_dns(found)
        endpoints = self._endpoints(target, request.get("tcp_connect"), addrs)
        connects, http_keys = await asyncio.gather(
            self._connect_all(target, endpoints, clock),
            WebConnectivity().measure(target, self.resources.context, clock, resolution=found,
                                      limits=limits, http3=_http3_mode(request)))
        tcp_results, tls_results = connects
        return {
            "tcp_connect": tcp_results,
            "tls_handshake": tls_results,
            "quic_handshake": _quic_summary(http_keys),
            "http_request": _http_summary(http_keys),
            "http3_request": _http3_summary(http_keys),
            "dns": {"failure": dns_failure, "addrs": addrs},
            "ip_info": self._ip_info(endpoints, addrs, tls_results),
            "x_client_ip": client_ip,
        }

    async def measure_endpoint(self, target: Target, request: Mapping[str, Any],
                               client_ip: str) -> dict[str, Any]:
        """kzprobe extension: ``http_request`` is an endpoint URI (``openvpn+udp://...``).

        The helper runs the same endpoint experiment from outside and answers, besides
        OONI's ``tcp_connect`` (TCP schemes only), ``x_endpoint``: its reachable/failure.
        No HTTP request is made (``http_request`` is null).
        """
        clock = Stopwatch()
        target = self._with_own_keys(target)
        if target.scheme == "wireguard" and target.param("private_key_file") is None:
            # Servers answer registered peers only: without a key of its own the helper's
            # silence would look like "down everywhere". Say it cannot judge instead.
            return {"tcp_connect": {}, "tls_handshake": {}, "quic_handshake": {},
                    "http_request": None, "http3_request": None,
                    "dns": {"failure": None, "addrs": []}, "ip_info": {},
                    "x_client_ip": client_ip,
                    "x_endpoint": {"test_name": "wireguard", "reachable": None, "failure": None,
                                   "failed_operation": None,
                                   "x_note": "no registered WireGuard peer for this server"}}
        found = await self._resolve(target, clock)
        addrs, dns_failure = _th_dns(found)
        endpoints = ([] if target.scheme in UDP_SCHEMES
                     else self._endpoints(target, request.get("tcp_connect"), addrs))
        experiment = experiment_for(target.scheme)
        assert isinstance(experiment, EndpointExperiment)  # every endpoint scheme's is one
        connects, keys = await asyncio.gather(
            self._connect_all(target, endpoints, clock),
            experiment.measure(target, self.resources.context, clock, resolution=found))
        tcp_results, tls_results = connects
        return {
            "tcp_connect": tcp_results,
            "tls_handshake": tls_results,
            "quic_handshake": {},
            "http_request": None,
            "http3_request": None,
            "dns": {"failure": dns_failure, "addrs": addrs},
            "ip_info": self._ip_info(endpoints, addrs, tls_results),
            "x_client_ip": client_ip,
            "x_endpoint": {"test_name": experiment.test_name,
                           "reachable": keys.get("reachable") is True,
                           "failure": keys.get("failure"),
                           "failed_operation": keys.get("failed_operation")},
        }

    def _with_own_keys(self, target: Target) -> Target:
        """A wireguard:// control uses this helper's registered key for that server, if any
        (without one the server stays silent and the control proves nothing)."""
        if target.scheme != "wireguard":
            return target
        wanted = target.param("public_key")
        for public_key, key_file, psk_file in self.config.helper.wireguard_peers:
            if public_key == wanted:
                extra = [("private_key_file", str(key_file))]
                if psk_file is not None:
                    extra.append(("psk_file", str(psk_file)))
                return replace(target, params=(*target.params, *extra))
        return target

    async def _resolve(self, target: Target, clock: Stopwatch) -> Resolution | None:
        """The one resolution of the request's host (None for an IP): answered as ``dns``
        and measured by the experiment."""
        if target.host_is_ip:
            return None
        return await resolve(target.host, self.resources.context, clock)

    def _endpoints(self, target: Target, requested: Any, addrs: list[str]) -> list[tuple[str, int]]:
        """Probe-supplied and resolved endpoints, restricted to the protocol's ports and policy."""
        ports = {target.port} if target.port not in (80, 443) else {80, 443}
        wanted: list[tuple[str, int]] = []
        for endpoint in requested if isinstance(requested, list) else []:
            parsed = _split_endpoint(str(endpoint)) if isinstance(endpoint, str) else None
            if parsed is not None:
                wanted.append(parsed)
        default_ports = sorted(ports) if target.port in (80, 443) else [target.port]
        wanted.extend((ip, port) for ip in addrs for port in default_ports)
        allowed = [(ip, port) for ip, port in dict.fromkeys(wanted)
                   if port in ports and port in self.config.helper.allowed_ports
                   and self.policy(ip)]
        return allowed[: self.config.helper.max_endpoints]

    async def _connect_all(self, target: Target, endpoints: list[tuple[str, int]],
                           clock: Stopwatch) -> tuple[dict[str, Any], dict[str, Any]]:
        steps = Measured(ctx=self.resources.context, clock=clock)
        results = await asyncio.gather(*(self._connect(steps, target, ip, port)
                                         for ip, port in endpoints))
        tcp_results = {key: value for key, value, _ in results}
        tls_results = {key: shake for key, _, shake in results if shake is not None}
        return tcp_results, tls_results

    async def _connect(self, steps: Measured, target: Target, ip: str,
                       port: int) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """TCP connect to one endpoint, and a TLS handshake on HTTPS ports (verified, SNI
        the URL host), through the probe's own steps (from ``bind_address``)."""
        key = join_hostport(ip, port)
        conn = await dial(steps, ip, port)
        connect = conn if isinstance(conn, tcp.TcpConnect) else conn.connect
        status = {"status": connect.failure is None,
                  "failure": _th_connect_failure(connect.failure)}
        wants_tls = port == 443 or (target.scheme == "https" and port == target.port)
        if isinstance(conn, tcp.TcpConnect) or not wants_tls:
            if not isinstance(conn, tcp.TcpConnect):
                await close_transport(conn.transport)
            return key, status, None
        shake, tls_transport = await secure(steps, conn, server_name=target.host,
                                            context=self.resources.context.verify_context)
        await close_transport(tls_transport)
        return key, status, {"server_name": target.host, "status": shake.failure is None,
                             "failure": shake.failure}

    def _ip_info(self, endpoints: list[tuple[str, int]], addrs: list[str],
                 tls_results: Mapping[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for ip in dict.fromkeys([ip for ip, _ in endpoints] + addrs):
            flags = (2 if ip in addrs else 1) | (4 if is_special_purpose(ip) else 0)
            if any(_host_of(key) == ip and value["status"]
                   for key, value in tls_results.items()):
                flags |= 8
            info[ip] = {"asn": _asn(self.geo, ip), "flags": flags}
        return info


def _asn(geo: GeoIP | None, ip: str) -> int:
    """The address's ASN from the helper's database; 0 (OONI's unknown) without one."""
    info = geo.asn(ip) if geo is not None else None
    return info.asn if info is not None else 0


def _host_of(endpoint: str) -> str | None:
    parsed = split_hostport(endpoint)
    return parsed[0] if parsed is not None else None


def _request_target(request: Mapping[str, Any]) -> Target:
    url = request.get("http_request")
    if not isinstance(url, str):
        raise BadRequest("http_request must be a URL string")
    try:
        target = parse_target(url)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if any(name.endswith("_file") for name, _ in target.params):
        raise BadRequest("endpoint parameters naming local files are not accepted")
    return target


def _http3_mode(request: Mapping[str, Any]) -> Http3Mode:
    """OONI's ``x_quic_enabled``: HTTP/3 when the site advertises it (kzprobe's
    ``x_quic_always``: whether or not it does)."""
    if request.get("x_quic_enabled") is not True:
        return "off"
    return "always" if request.get("x_quic_always") is True else "alt-svc"


def _quic_summary(keys: Mapping[str, Any]) -> dict[str, Any]:
    """THResponse ``quic_handshake``: the helper's QUIC handshakes, shaped as ``tls_handshake``."""
    return {shake["address"]: {"server_name": shake["server_name"],
                               "status": shake["failure"] is None, "failure": shake["failure"]}
            for shake in keys.get("quic_handshakes") or []}


def _http3_summary(keys: Mapping[str, Any]) -> dict[str, Any] | None:
    """THResponse ``http3_request``: the helper's HTTP/3 fetch, or null when none was tried
    (no Alt-Svc, or not asked). A failed handshake is the request's failure."""
    shakes = keys.get("quic_handshakes") or []
    if not shakes:
        return None
    requests = [q for q in keys.get("requests") or [] if q.get("network") == "udp"]
    failure = shakes[0]["failure"] or (requests[0]["failure"] if requests else None)
    return _summary(requests[0] if requests else None, failure, None)


def _http_summary(keys: Mapping[str, Any]) -> dict[str, Any]:
    """The final hop of the helper's own fetch, in THResponse ``http_request`` shape."""
    requests = [q for q in keys.get("requests") or [] if q.get("network") != "udp"]
    summary = _summary(requests[0] if requests else None, keys.get("http_experiment_failure"),
                       keys.get("dns_experiment_failure"))
    summary["discovered_h3_endpoint"] = keys.get("x_h3_endpoint") or ""
    return summary


def _summary(final: Mapping[str, Any] | None, failure: str | None,
             dns_failure: str | None) -> dict[str, Any]:
    """One request in THResponse shape (``body_length`` -1 and the TH's failure word when it
    failed)."""
    if failure or final is None or not final["response"]["code"]:
        return {"body_length": -1, "discovered_h3_endpoint": "", "status_code": -1,
                "failure": _th_http_failure(failure or dns_failure
                                            or failures.TH_UNKNOWN_ERROR),
                "title": "", "headers": {}}
    response = final["response"]
    body = response["body"]
    length = final.get("x_body_length") or (len(body) if isinstance(body, str) else 0)
    return {"body_length": length, "discovered_h3_endpoint": "", "failure": None,
            "status_code": response["code"], "headers": response["headers"],
            "title": web_title(body_bytes(body))}  # as the probe's analysis compares it
