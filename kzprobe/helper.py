"""``kzprobe helper``: an OONI-compatible Web Connectivity test helper (the control vantage).

It answers OONI's ``THRequest`` with a ``THResponse`` (probe-cli ``internal/model/th.go``):
DNS from the helper's own resolvers, TCP connects and TLS handshakes to the endpoints,
and one HTTP fetch, all measured with kzprobe's own probe steps from outside the
censored network. Because the protocol is OONI's, OONI probes can use it and kzprobe can
use OONI's helpers.

It faces the internet, so it is an SSRF risk: it never dials special-purpose addresses
(literal, resolved, IPv4-mapped, odd spellings, or reached by redirect) unless
``[helper] allow_nets`` lists them, only dials the ports the protocol uses, and bounds
request size, requests in flight, per-client rate and time per request.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog
from aiohttp import web

from kzprobe.bogons import is_special_purpose, parse_ip_loose
from kzprobe.config import Config
from kzprobe.engine import Prober
from kzprobe.probes import experiment_for, tcp, tls
from kzprobe.probes.base import Stopwatch, close_transport
from kzprobe.probes.endpoint import UDP_SCHEMES
from kzprobe.probes.http import BodyTooLarge, read_whole
from kzprobe.probes.resolve import resolve
from kzprobe.probes.web_connectivity import WebConnectivity
from kzprobe.ratelimit import TokenBucket
from kzprobe.targets import Target, parse_target

log = structlog.get_logger("kzprobe.helper")
HELLO = {"message": "Hello OONItarian!", "software": "kzprobe"}
MAX_CLIENT_BUCKETS = 10_000
_HTTP_FAILURES = {"generic_timeout_error": "generic_timeout_error",
                  "connection_refused": "connection_refused_error"}


class BadRequest(Exception):
    """A THRequest we cannot serve; answered with HTTP 400."""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = parse_ip_loose(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class DialPolicy:
    """Which addresses the helper may connect to: public ones, plus ``allow_nets``."""

    def __init__(self, allow_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]):
        self.allow_nets = allow_nets

    def __call__(self, ip: str) -> bool:
        address = _ip(ip)
        if address is None:
            return False
        if any(address in net for net in self.allow_nets):
            return True
        return not is_special_purpose(address)


def _split_endpoint(endpoint: str) -> tuple[str, int] | None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _th_dns_failure(failure: str | None) -> str | None:
    if failure in (None, "dns_no_answer"):
        return None
    if failure == "dns_nxdomain_error":
        return "dns_name_error"
    if failure in ("dns_servfail_error", "dns_refused_error", "dns_server_misbehaving",
                   "dns_temporary_failure", "dns_non_recoverable_failure"):
        return "dns_server_failure"
    return "unknown_error" if failure != "generic_timeout_error" else failure


def _th_connect_failure(failure: str | None) -> str | None:
    if failure is None or failure == "generic_timeout_error":
        return failure
    return "connection_refused_error" if failure == "connection_refused" else "connect_error"


def _th_http_failure(failure: str) -> str:
    if failure.startswith("dns_"):
        return "dns_lookup_error"
    return _HTTP_FAILURES.get(failure, "unknown_error")


class Helper:
    """Measures one THRequest from the helper's vantage point."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = DialPolicy(config.helper.allow_nets)
        self.prober = Prober(config, may_dial=self.policy,
                             source_address=config.helper.bind_address)

    async def aclose(self) -> None:
        await self.prober.aclose()

    async def measure(self, request: Mapping[str, Any], client_ip: str) -> dict[str, Any]:
        target = _request_target(request)
        if target.is_endpoint:
            return await self.measure_endpoint(target, request, client_ip)
        clock = Stopwatch()
        addrs, dns_failure = await self._resolve(target, clock)
        endpoints = self._endpoints(target, request.get("tcp_connect"), addrs)
        connects, http_keys = await asyncio.gather(
            self._connect_all(target, endpoints, clock),
            WebConnectivity().measure(target, self.prober.context, clock))
        tcp_results, tls_results = connects
        return {
            "tcp_connect": tcp_results,
            "tls_handshake": tls_results,
            "quic_handshake": {},
            "http_request": _http_summary(http_keys),
            "http3_request": None,
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
        addrs, dns_failure = await self._resolve(target, clock)
        endpoints = ([] if target.scheme in UDP_SCHEMES
                     else self._endpoints(target, request.get("tcp_connect"), addrs))
        experiment = experiment_for(target.scheme)
        connects, keys = await asyncio.gather(
            self._connect_all(target, endpoints, clock),
            experiment.measure(target, self.prober.context, clock))
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

    async def _resolve(self, target: Target, clock: Stopwatch) -> tuple[list[str], str | None]:
        if target.host_is_ip:
            return [], None
        found = await resolve(target.host, self.prober.context, clock)
        return found.addresses, _th_dns_failure(found.failure)

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
                   if port in ports and self.policy(ip)]
        return allowed[: self.config.helper.max_endpoints]

    async def _connect_all(self, target: Target, endpoints: list[tuple[str, int]],
                           clock: Stopwatch) -> tuple[dict[str, Any], dict[str, Any]]:
        results = await asyncio.gather(*(self._connect(target, ip, port, clock)
                                         for ip, port in endpoints))
        tcp_results = {key: value for key, value, _ in results}
        tls_results = {key: shake for key, _, shake in results if shake is not None}
        return tcp_results, tls_results

    async def _connect(self, target: Target, ip: str, port: int,
                       clock: Stopwatch) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        cfg = self.config
        key = _format_endpoint(ip, port)
        result, transport, held = await tcp.connect(ip, port, timeout=cfg.timeouts.connect,
                                                    clock=clock, source=cfg.helper.bind_address)
        status = {"status": result.failure is None,
                  "failure": _th_connect_failure(result.failure)}
        wants_tls = port == 443 or (target.scheme == "https" and port == target.port)
        if transport is None or held is None or not wants_tls:
            await close_transport(transport)
            return key, status, None
        shake, tls_transport = await tls.handshake(
            transport, held, address=key, server_name=target.host,
            context=self.prober.context.verify_context, timeout=cfg.timeouts.tls, clock=clock,
            max_chain_bytes=cfg.tls.max_chain_bytes)
        await close_transport(tls_transport or transport)
        return key, status, {"server_name": target.host, "status": shake.failure is None,
                             "failure": shake.failure}

    def _ip_info(self, endpoints: list[tuple[str, int]], addrs: list[str],
                 tls_results: Mapping[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for ip in dict.fromkeys([ip for ip, _ in endpoints] + addrs):
            flags = (2 if ip in addrs else 1) | (4 if is_special_purpose(ip) else 0)
            if any(key.startswith((f"{ip}:", f"[{ip}]:")) and value["status"]
                   for key, value in tls_results.items()):
                flags |= 8
            info[ip] = {"asn": 0, "flags": flags}
        return info


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


def _http_summary(keys: Mapping[str, Any]) -> dict[str, Any]:
    """The final hop of the helper's own fetch, in THResponse ``http_request`` shape."""
    requests = keys.get("requests") or []
    failure = keys.get("http_experiment_failure")
    final = requests[0] if requests else None
    if failure or final is None or not final["response"]["code"]:
        return {"body_length": -1, "discovered_h3_endpoint": "", "status_code": -1,
                "failure": _th_http_failure(failure or keys.get("dns_experiment_failure")
                                            or "unknown_error"),
                "title": "", "headers": {}}
    response = final["response"]
    body = response["body"]
    length = final.get("x_body_length") or (len(body) if isinstance(body, str) else 0)
    return {"body_length": length, "discovered_h3_endpoint": "", "failure": None,
            "status_code": response["code"], "headers": response["headers"],
            "title": _title(body)}


def _title(body: Any) -> str:
    if not isinstance(body, str):
        return ""
    lower = body.lower()
    start = lower.find("<title")
    if start < 0:
        return ""
    start = lower.find(">", start) + 1
    end = lower.find("</title", start)
    return body[start:end].strip() if 0 < start <= end else ""


class HelperServer:
    """The HTTP front: auth, limits, and JSON in and out."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.helper = Helper(config)
        self.in_flight = 0
        self._buckets: dict[str, TokenBucket] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.helper.max_body_bytes)
        app.router.add_get("/", self.hello)
        app.router.add_post("/", self.control)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await self.helper.aclose()

    async def hello(self, request: web.Request) -> web.Response:
        return _json(HELLO)

    def _authorised(self, request: web.Request) -> bool:
        token = self.config.helper.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _rate_ok(self, client: str) -> bool:
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENT_BUCKETS:
                self._buckets.clear()  # bounded memory; a flood resets everyone's budget
            helper = self.config.helper
            bucket = self._buckets[client] = TokenBucket(helper.rate_per_client, helper.rate_burst)
        return bucket.try_acquire()

    async def control(self, request: web.Request) -> web.Response:
        client = request.remote or ""
        if not self._authorised(request):
            return _json({"error": "unauthorized"}, status=401)
        if not self._rate_ok(client):
            return _json({"error": "too many requests"}, status=429)
        if self.in_flight >= self.config.helper.max_in_flight:
            return _json({"error": "busy"}, status=503)
        self.in_flight += 1
        try:
            return await self._serve(request, client)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: web.Request, client: str) -> web.Response:
        limit = self.config.helper.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json({"error": "request too large"}, status=413)
        try:
            async with asyncio.timeout(self.config.helper.deadline):
                body = await read_whole(request.content, limit)
                payload = orjson.loads(body)
                if not isinstance(payload, dict):
                    raise BadRequest("expected a JSON object")
                return _json(await self.helper.measure(payload, client))
        except BodyTooLarge:
            return _json({"error": "request too large"}, status=413)
        except (orjson.JSONDecodeError, BadRequest) as exc:
            return _json({"error": f"bad request: {exc}"[:200]}, status=400)
        except TimeoutError:
            return _json({"error": "deadline exceeded"}, status=504)


class _Refused(asyncio.Protocol):
    """Closes a connection at once: the helper is at ``max_connections``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@dataclass(slots=True)
class RunningHelper:
    """A listening helper: its URL, and how to stop it."""

    url: str
    runner: web.AppRunner
    server: asyncio.AbstractServer

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


def _server_ssl(config: Config) -> ssl.SSLContext | None:
    helper = config.helper
    if not (helper.tls_cert and helper.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(helper.tls_cert), str(helper.tls_key))
    return context


async def start_helper(config: Config) -> tuple[RunningHelper, str]:
    """Serve the helper on ``[helper] listen`` (port 0 picks one).

    Slow clients are bounded twice: a connection that has not delivered a whole request
    within ``client_timeout`` is closed (slowloris), and at most ``max_connections`` are
    open at once (further ones are closed on accept).
    """
    helper = config.helper
    host, _, port = helper.listen.rpartition(":")
    context = _server_ssl(config)
    runner = web.AppRunner(HelperServer(config).app(), handle_signals=False, access_log=None,
                           shutdown_timeout=5.0, keepalive_timeout=helper.client_timeout)
    await runner.setup()
    handlers = runner.server
    assert handlers is not None

    def accept() -> asyncio.BaseProtocol:
        if len(handlers.connections) >= helper.max_connections:
            return _Refused()
        return handlers()

    try:
        server = await asyncio.get_running_loop().create_server(
            accept, host.strip("[]"), int(port), ssl=context, backlog=128,
            ssl_handshake_timeout=helper.client_timeout if context else None)
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"{'https' if context else 'http'}://{shown}:{bound[1]}/"
    return RunningHelper(url, runner, server), url


def _json(data: Mapping[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
