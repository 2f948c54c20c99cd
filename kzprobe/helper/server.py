"""The helper's HTTP front: auth, per-client and global limits, the connection gate,
JSON in and out, and aiohttp's own errors logged in bounded JSON lines.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from aiohttp import web

from kzprobe.config import Config, HelperConfig, is_loopback_host
from kzprobe.helper.policy import (
    MAX_CLIENT_BUCKETS,
    Client,
    ClientTable,
    client_address,
    client_bucket,
    in_networks,
    log_prefix,
)
from kzprobe.helper.th import BadRequest, Helper
from kzprobe.measure.context import close_transport
from kzprobe.measure.experiments.web_connectivity import FetchLimits
from kzprobe.measure.ratelimit import TokenBucket
from kzprobe.measure.steps.http import BodyTooLarge, read_whole
from kzprobe.netaddr import join_hostport

log = structlog.get_logger("kzprobe.helper")
HELLO = {"message": "Hello OONItarian!", "software": "kzprobe"}
SERVER_ERRORS_PER_MINUTE = 20  # aiohttp's own errors (malformed HTTP) logged, then counted


def startup_warnings(helper: HelperConfig) -> list[tuple[str, str]]:
    """Settings that expose the helper, logged loudly at start: (event, explanation)."""
    host = helper.listen.rpartition(":")[0]  # config's form: IPv6 with or without brackets
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


class HelperServer:
    """The HTTP front: auth, limits, and JSON in and out."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.helper = Helper(config)
        self.in_flight = 0
        limits = config.helper
        self._clients: ClientTable[Client] = ClientTable(MAX_CLIENT_BUCKETS, self._new_client)
        self._budget = TokenBucket(limits.max_requests_per_minute / 60,
                                   limits.max_requests_per_minute)
        self._connections: dict[str, int] = {}  # open connections per client bucket
        self.open_connections = 0

    def _new_client(self) -> Client:
        helper = self.config.helper
        return Client(TokenBucket(helper.rate_per_client, helper.rate_burst),
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
        """One JSON line per request (``access_log_sample`` of them): the client as its /24
        or /48 only (the privacy rule: a helper's log never holds a probe's address), what
        was asked, the answer's status and size, how long it took."""
        started = time.monotonic()
        status, size = 500, None
        try:
            response: web.StreamResponse = await handler(request)
            status, size = response.status, response.content_length
            return response
        except web.HTTPException as exc:  # raised answers (413, 404 ...) are answers too
            status, size = exc.status, exc.content_length
            raise
        finally:
            if random.random() < self.config.helper.access_log_sample:
                log.info("helper_access", client=log_prefix(self.client(request)),
                         method=request.method, path=request.path, status=status,
                         bytes_in=request.content_length, bytes_out=size,
                         duration=round(time.monotonic() - started, 4))

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
        key = "" if in_networks(peer, helper.trusted_proxies) else client_bucket(peer)
        count = self._connections.get(key, 0)
        if key and count >= helper.max_connections_per_client:
            return False
        self._connections[key] = count + 1
        self.open_connections += 1
        return True

    def connection_closed(self, peer: str) -> None:
        self.open_connections -= 1
        key = "" if in_networks(peer, self.config.helper.trusted_proxies) else \
            client_bucket(peer)
        count = self._connections.get(key, 0)
        if count <= 1:
            self._connections.pop(key, None)  # bounded: only open connections are counted
        else:
            self._connections[key] = count - 1

    def _refusal(self, entry: Client) -> web.Response | None:
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
        self.in_flight += 1
        try:
            return await self._serve(request, client, limits)
        finally:
            self.in_flight -= 1
            entry.bytes_left -= self.config.helper.max_fetch_bytes - limits.remaining

    async def _serve(self, request: web.Request, client: str,
                     limits: FetchLimits) -> web.Response:
        limit = self.config.helper.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json({"error": "request too large"}, status=413)
        try:
            async with asyncio.timeout(self.config.helper.deadline):
                body = await read_whole(request.content, limit)
                payload = orjson.loads(body)
                if not isinstance(payload, dict):
                    raise BadRequest("expected a JSON object")
                return _json(await self.helper.measure(payload, client, limits))
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
    host, _, port = helper.listen.rpartition(":")  # config's form (see startup_warnings)
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
    url = f"{'https' if context else 'http'}://{join_hostport(bound[0], bound[1])}/"
    return RunningHelper(url, runner, server), url


def _json(data: Mapping[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
