"""``kzprobe helper``: an OONI-compatible Web Connectivity test helper (the control vantage).

It answers OONI's ``THRequest`` with a ``THResponse`` (probe-cli ``internal/model/th.go``):
DNS from the helper's own resolvers, TCP connects and TLS handshakes to the endpoints,
and one HTTP fetch, all measured with kzprobe's own probe steps from outside the
censored network. Because the protocol is OONI's, OONI probes can use it and kzprobe can
use OONI's helpers.

It faces the internet, so it is an SSRF risk and a would-be open proxy: it never dials
special-purpose addresses (literal, resolved, IPv4-mapped, odd spellings, or reached by
redirect) unless ``[helper] allow_nets`` lists them, dials only ``allowed_ports``, refuses
to listen beyond loopback without a token, and bounds request size, requests in flight,
bytes fetched (per request and per client), per-client rate and connections, the global
request rate, and time per request. Behind a reverse proxy, ``trusted_proxies`` say
whose forwarding headers name the client.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, cast

import orjson
import structlog
from aiohttp import web

from kzprobe.bogons import is_special_purpose, parse_ip_loose
from kzprobe.config import Config, HelperConfig, is_loopback_host
from kzprobe.engine import Prober
from kzprobe.measure.context import Stopwatch, close_transport
from kzprobe.measure.experiments.endpoint import UDP_SCHEMES, EndpointExperiment
from kzprobe.measure.experiments.web_connectivity import FETCH_LIMITS, FetchLimits, WebConnectivity
from kzprobe.measure.flow import Measured, Resolution, dial, resolve, secure
from kzprobe.measure.ratelimit import TokenBucket
from kzprobe.measure.registry import experiment_for
from kzprobe.measure.steps import tcp
from kzprobe.measure.steps.http import BodyTooLarge, read_whole
from kzprobe.targets import Target, parse_target

log = structlog.get_logger("kzprobe.helper")
HELLO = {"message": "Hello OONItarian!", "software": "kzprobe"}
MAX_CLIENT_BUCKETS = 10_000
SERVER_ERRORS_PER_MINUTE = 20  # aiohttp's own errors (malformed HTTP) logged, then counted
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")
_HTTP_FAILURES = {"generic_timeout_error": "generic_timeout_error",
                  "connection_refused": "connection_refused_error"}


class BadRequest(Exception):
    """A THRequest we cannot serve; answered with HTTP 400."""


def _prober_config(config: Config) -> Config:
    """The helper's own limits for its measuring steps: ``per_destination`` concurrent
    connections per address (the probe's ``per_host`` is for one probe, not for many
    clients at once) and no more body per hop than a whole request may fetch."""
    helper, limits = config.helper, config.limits
    return replace(config, limits=replace(
        limits, per_host=helper.per_destination,
        body_bytes=min(limits.body_bytes, helper.max_fetch_bytes)))


def startup_warnings(helper: HelperConfig) -> list[tuple[str, str]]:
    """Settings that expose the helper, logged loudly at start: (event, explanation)."""
    host = helper.listen.rpartition(":")[0]
    if is_loopback_host(host):
        return []
    if not helper.token:
        return [("helper_anonymous_public",
                 f"anyone who reaches {helper.listen} can use this helper (allow_anonymous)")]
    if not (helper.tls_cert and helper.tls_key):
        return [("helper_token_over_http",
                 "the token crosses the network in clear: set tls_cert/tls_key or put "
                 "the helper behind a TLS proxy")]
    return []


class ClientTable(Generic[T]):
    """Per-client state, at most ``capacity`` clients: the least recently seen goes first
    (a flood of new sources evicts only stale entries, never an active client's budget)."""

    def __init__(self, capacity: int, make: Callable[[], T]) -> None:
        self.capacity = capacity
        self._make = make
        self._entries: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._make()
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class _Client:
    """One client's budgets: requests (a token bucket) and body bytes fetched per minute."""

    requests: TokenBucket
    bytes_left: float
    stamp: float

    def bytes_ok(self, per_minute: int) -> bool:
        now = time.monotonic()
        self.bytes_left = min(per_minute, self.bytes_left + (now - self.stamp) * per_minute / 60)
        self.stamp = now
        return self.bytes_left > 0


def client_bucket(ip: str) -> str:
    """The unit of per-client limits: one IPv4 address, or one IPv6 /64 (one subscriber)."""
    address = _ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else ip


def log_prefix(ip: str) -> str:
    """A client as the access log shows it: its /24 or /48, not the address itself."""
    address = _ip(ip)
    if address is None:
        return "?"
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((address, bits), strict=False))


def _in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    address = _ip(ip)
    return address is not None and any(address in net for net in networks)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` hops of RFC 7239 ``Forwarded``, left to right, ports and quotes removed."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, node = pair.strip().partition("=")
            if name.strip().lower() != "for":
                continue
            node = node.strip().strip('"')
            if node.startswith("["):
                node = node[1:].partition("]")[0]
            elif node.count(":") == 1:
                node = node.partition(":")[0]
            hops.append(node)
    return hops


def client_address(peer: str, headers: Mapping[str, str],
                   trusted: tuple[Network, ...]) -> str:
    """The client: the TCP peer, or, when the peer is a trusted proxy, the rightmost hop of
    ``X-Forwarded-For`` (else ``Forwarded: for=``) that is not itself a trusted proxy.
    A hop that is not an IP address stops the walk at the last trusted address."""
    if not trusted or not _in_networks(peer, trusted):
        return peer
    getall = getattr(headers, "getall", None)
    xff = getall("X-Forwarded-For", []) if getall else [headers.get("X-Forwarded-For", "")]
    hops = [hop.strip() for value in xff for hop in value.split(",") if hop.strip()]
    if not hops:
        forwarded = getall("Forwarded", []) if getall else [headers.get("Forwarded", "")]
        hops = [hop for value in forwarded for hop in _forwarded_for(value)]
    client = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        client = str(address)
        if not _in_networks(client, trusted):
            break
    return client


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


def _th_dns(found: Resolution | None) -> tuple[list[str], str | None]:
    """THResponse ``dns``: the addresses and the failure (none for an IP host)."""
    if found is None:
        return [], None
    return found.addresses, _th_dns_failure(found.failure)


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
        self.prober = Prober(_prober_config(config), may_dial=self.policy,
                             source_address=config.helper.bind_address)

    async def aclose(self) -> None:
        await self.prober.aclose()

    async def measure(self, request: Mapping[str, Any], client_ip: str) -> dict[str, Any]:
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
            WebConnectivity().measure(target, self.prober.context, clock, resolution=found))
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
        found = await self._resolve(target, clock)
        addrs, dns_failure = _th_dns(found)
        endpoints = ([] if target.scheme in UDP_SCHEMES
                     else self._endpoints(target, request.get("tcp_connect"), addrs))
        experiment = experiment_for(target.scheme)
        assert isinstance(experiment, EndpointExperiment)  # every endpoint scheme's is one
        connects, keys = await asyncio.gather(
            self._connect_all(target, endpoints, clock),
            experiment.measure(target, self.prober.context, clock, resolution=found))
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
        return await resolve(target.host, self.prober.context, clock)

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
        steps = Measured(ctx=self.prober.context, clock=clock)
        results = await asyncio.gather(*(self._connect(steps, target, ip, port)
                                         for ip, port in endpoints))
        tcp_results = {key: value for key, value, _ in results}
        tls_results = {key: shake for key, _, shake in results if shake is not None}
        return tcp_results, tls_results

    async def _connect(self, steps: Measured, target: Target, ip: str,
                       port: int) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """TCP connect to one endpoint, and a TLS handshake on HTTPS ports (verified, SNI
        the URL host), through the probe's own steps (from ``bind_address``)."""
        key = _format_endpoint(ip, port)
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
                                            context=self.prober.context.verify_context)
        await close_transport(tls_transport)
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
        limits = config.helper
        self._clients: ClientTable[_Client] = ClientTable(MAX_CLIENT_BUCKETS, self._new_client)
        self._budget = TokenBucket(limits.max_requests_per_minute / 60,
                                   limits.max_requests_per_minute)
        self._connections: dict[str, int] = {}  # open connections per client bucket
        self.open_connections = 0

    def _new_client(self) -> _Client:
        helper = self.config.helper
        return _Client(TokenBucket(helper.rate_per_client, helper.rate_burst),
                       float(helper.client_bytes_per_minute), time.monotonic())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.helper.max_body_bytes,
                              middlewares=[self._access_log])
        app.router.add_get("/", self.hello)
        app.router.add_post("/", self.control)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await self.helper.aclose()

    @web.middleware
    async def _access_log(self, request: web.Request,
                          handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """A sampled access log: JSON via structlog; the client as its /24 or /48."""
        started = time.monotonic()
        response: web.StreamResponse = await handler(request)
        if random.random() < self.config.helper.access_log_sample:
            log.info("helper_access", client=log_prefix(self.client(request)),
                     method=request.method, status=response.status,
                     duration=round(time.monotonic() - started, 4))
        return response

    async def hello(self, request: web.Request) -> web.Response:
        return _json(HELLO)

    def client(self, request: web.Request) -> str:
        """Who asked: the peer, or the client a trusted proxy names."""
        return client_address(request.remote or "", request.headers,
                              self.config.helper.trusted_proxies)

    def _authorised(self, request: web.Request) -> bool:
        token = self.config.helper.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def connection_opened(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (close it) above ``max_connections``
        or the per-client cap (trusted proxies carry many clients: only the first applies)."""
        helper = self.config.helper
        if self.open_connections >= helper.max_connections:
            return False
        key = "" if _in_networks(peer, helper.trusted_proxies) else client_bucket(peer)
        count = self._connections.get(key, 0)
        if key and count >= helper.max_connections_per_client:
            return False
        self._connections[key] = count + 1
        self.open_connections += 1
        return True

    def connection_closed(self, peer: str) -> None:
        self.open_connections -= 1
        key = "" if _in_networks(peer, self.config.helper.trusted_proxies) else \
            client_bucket(peer)
        count = self._connections.get(key, 0)
        if count <= 1:
            self._connections.pop(key, None)  # bounded: only open connections are counted
        else:
            self._connections[key] = count - 1

    def _refusal(self, entry: _Client) -> web.Response | None:
        """429 for a client over its rate or byte budget, 503 over the global budget or
        ``max_in_flight``; None when the request may go ahead."""
        helper = self.config.helper
        if not entry.requests.try_acquire():
            return _json({"error": "too many requests"}, status=429)
        if not entry.bytes_ok(helper.client_bytes_per_minute):
            return _json({"error": "too many bytes fetched, retry later"}, status=429)
        if not self._budget.try_acquire():
            return _json({"error": "busy: request budget spent"}, status=503)
        if self.in_flight >= helper.max_in_flight:
            return _json({"error": "busy"}, status=503)
        return None

    async def control(self, request: web.Request) -> web.Response:
        client = self.client(request)
        if not self._authorised(request):
            return _json({"error": "unauthorized"}, status=401)
        entry = self._clients.get(client_bucket(client))
        refusal = self._refusal(entry)
        if refusal is not None:
            return refusal
        limits = FetchLimits(remaining=self.config.helper.max_fetch_bytes,
                             ports=self.config.helper.allowed_ports)
        token = FETCH_LIMITS.set(limits)
        self.in_flight += 1
        try:
            return await self._serve(request, client)
        finally:
            self.in_flight -= 1
            FETCH_LIMITS.reset(token)
            entry.bytes_left -= self.config.helper.max_fetch_bytes - limits.remaining

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


class _PerClientGate(asyncio.Protocol):
    """Every accepted connection starts here. It counts against ``max_connections`` and
    its peer's ``max_connections_per_client`` as soon as it is made (before any TLS
    handshake, so idle half-open handshakes count too) and is closed above either cap;
    otherwise it does the TLS handshake, if any, and hands every event to aiohttp."""

    def __init__(self, server: HelperServer, make: Callable[[], asyncio.Protocol],
                 tls: ssl.SSLContext | None, handshake_timeout: float) -> None:
        self._server, self._make = server, make
        self._tls, self._handshake_timeout = tls, handshake_timeout
        self._inner: asyncio.Protocol | None = None
        self._peer: str | None = None
        self._early: list[bytes] = []  # decrypted bytes that beat the handler's creation
        self._handshake: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        if not self._server.connection_opened(peer):
            transport.close()
            return
        self._peer = peer
        if self._tls is None:
            self._attach(transport)
        else:
            self._handshake = asyncio.ensure_future(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.BaseTransport) -> None:
        assert self._tls is not None
        try:
            secure = await asyncio.get_running_loop().start_tls(
                cast(asyncio.WriteTransport, transport), self, self._tls, server_side=True,
                ssl_handshake_timeout=self._handshake_timeout)
        except Exception:  # a failed or timed-out handshake is the client's problem
            secure = None
        if secure is None:
            await close_transport(transport)
            self._release()
            return
        self._attach(secure)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._make()
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()

    def _release(self) -> None:
        if self._peer is not None:
            self._server.connection_closed(self._peer)
            self._peer = None

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._peer is not None and sum(map(len, self._early)) < 65536:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)


class _ServerErrors(logging.Handler):
    """aiohttp's own errors (malformed HTTP, before any handler runs) as one JSON line each
    through structlog, no traceback, at most ``per_minute``; then one count of the rest."""

    def __init__(self, per_minute: int) -> None:
        super().__init__(logging.DEBUG)
        self.per_minute = per_minute
        self._window = time.monotonic()
        self._logged = self._suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self._window >= 60:
            self.flush()
            self._window, self._logged = now, 0
        if self._logged >= self.per_minute:
            self._suppressed += 1
            return
        self._logged += 1
        exc = record.exc_info[1] if record.exc_info else None
        log.warning("helper_server_error", level_name=record.levelname.lower(),
                    message=record.getMessage()[:200],
                    error=f"{type(exc).__name__}: {exc}"[:200] if exc else None)


    def flush(self) -> None:
        """Log how many errors were left out (each minute, and when the helper stops)."""
        if self._suppressed:
            log.warning("helper_server_errors_suppressed", count=self._suppressed)
            self._suppressed = 0


def _server_logger() -> logging.Logger:
    """The logger aiohttp's request handlers use, routed to :class:`_ServerErrors` only
    (nothing reaches the root logger's stderr fallback)."""
    logger = logging.getLogger("kzprobe.helper.server")
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    if not any(isinstance(h, _ServerErrors) for h in logger.handlers):
        logger.addHandler(_ServerErrors(SERVER_ERRORS_PER_MINUTE))
    return logger


@dataclass(slots=True)
class RunningHelper:
    """A listening helper: its URL, and how to stop it."""

    url: str
    runner: web.AppRunner
    server: asyncio.AbstractServer

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()
        for handler in _server_logger().handlers:
            handler.flush()


def _server_ssl(config: Config) -> ssl.SSLContext | None:
    helper = config.helper
    if not (helper.tls_cert and helper.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(helper.tls_cert), str(helper.tls_key))
    return context


async def start_helper(config: Config) -> tuple[RunningHelper, str]:
    """Serve the helper on ``[helper] listen`` (port 0 picks one).

    Slow clients are bounded three ways: a connection that has not delivered a whole
    request within ``client_timeout`` is closed (slowloris), at most ``max_connections``
    are open at once and at most ``max_connections_per_client`` from one client (further
    ones are closed on accept).
    """
    helper = config.helper
    for event, why in startup_warnings(helper):
        log.warning(event, listen=helper.listen, why=why)
    host, _, port = helper.listen.rpartition(":")
    context = _server_ssl(config)
    front = HelperServer(config)
    runner = web.AppRunner(front.app(), handle_signals=False, access_log=None,
                           shutdown_timeout=5.0, keepalive_timeout=helper.client_timeout,
                           logger=_server_logger())
    await runner.setup()
    handlers = runner.server
    assert handlers is not None

    def accept() -> asyncio.BaseProtocol:
        return _PerClientGate(front, handlers, context, helper.client_timeout)

    try:
        server = await asyncio.get_running_loop().create_server(
            accept, host.strip("[]"), int(port), backlog=128)
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"{'https' if context else 'http'}://{shown}:{bound[1]}/"
    return RunningHelper(url, runner, server), url


def _json(data: Mapping[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
