"""HTTP step: one GET with aiohttp on an already-measured connection (OONI df-001).

aiohttp never dials here: :class:`HandoffConnector` gives it the TCP or TLS transport
the earlier steps measured, so the GET travels on the connection whose handshake was
recorded (no hidden second lookup or connection) and an HTTPS measurement costs one
connection. Reads are bounded in bytes and time; hostile servers end as failures.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from kzprobe import failures
from kzprobe.errors import HttpFailure, classify
from kzprobe.measure.context import Stopwatch, maybe_binary
from kzprobe.measure.headers import REQUEST_HEADERS
from kzprobe.measure.steps.tcp import HeldProtocol
from kzprobe.measure.traffic import TcpTally

READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 1 << 20  # stored header bytes per response

_handoff: contextvars.ContextVar[tuple[asyncio.Transport, HeldProtocol] | None] = (
    contextvars.ContextVar("kzprobe_http_handoff", default=None)
)


class _MeasuredHandler(ResponseHandler):
    """aiohttp's protocol, but a body the parser rejects ends the body read at once.

    aiohttp 3.14's C parser reports a malformed body (a garbage chunk-size line after
    the headers) to the protocol only, and the body reader waits for the HTTP deadline:
    the record would say timeout where the server sent garbage. On a plain-HTTP
    connection it is the socket's protocol, so it reads the byte counters as it ends.
    """

    tally: TcpTally | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.tally is not None:
            self.tally.settle(final=True)
        super().connection_lost(exc)

    def set_exception(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        payload = self._payload
        super().set_exception(exc, *args, **kwargs)
        if (isinstance(exc, HttpProcessingError) and payload is not None
                and payload.exception() is None and not payload.is_eof()):
            failure = HttpFailure(failures.HTTP_INVALID_RESPONSE)
            failure.__cause__ = exc
            payload.set_exception(failure)


class HandoffConnector(aiohttp.BaseConnector):
    """An aiohttp connector that uses the connection handed to it instead of dialling."""

    def __init__(self) -> None:
        super().__init__(force_close=True, limit=0)

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> ResponseHandler:
        handed = _handoff.get()
        if handed is None:
            raise aiohttp.ClientConnectionError("no measured connection to use")
        transport, held = handed
        if transport.is_closing() or held.closed:
            raise ConnectionResetError(None, "connection closed before the request")
        proto = _MeasuredHandler(asyncio.get_running_loop())
        proto.tally = held.tally
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if held.early:
            proto.data_received(bytes(held.early))
        return proto


def measuring_session() -> aiohttp.ClientSession:
    """The one aiohttp session measurements share: it dials nothing (connections are handed
    over), keeps no cookies, and never retries.

    aiohttp retries an idempotent request once after a reset or disconnect; a measurement
    must record that first failure, not a second attempt (which would find the handed-over
    connection already gone). There is no public switch, hence the private attribute.
    """
    session = aiohttp.ClientSession(
        connector=HandoffConnector(),
        cookie_jar=aiohttp.DummyCookieJar(),
        max_line_size=16 * 1024,
        max_field_size=16 * 1024,
        auto_decompress=True,
    )
    session._retry_connection = False
    return session


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    code: int
    headers_list: tuple[tuple[str, str], ...]
    body: bytes
    body_is_truncated: bool

    def archival(self) -> dict[str, Any]:
        headers: dict[str, Any] = {}
        for key, value in self.headers_list:
            headers.setdefault(key, value)
        return {
            "code": self.code,
            "headers": headers,
            "headers_list": [list(pair) for pair in self.headers_list],
            "body": maybe_binary(self.body),
            "body_is_truncated": self.body_is_truncated,
        }

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers_list if k.lower() == lowered), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpTransaction:
    url: str
    address: str
    alpn: str
    failure: str | None
    request_headers: tuple[tuple[str, str], ...]
    response: HttpResponse | None
    t0: float
    t: float
    ttfb: float | None = None
    body_seconds: float | None = None
    transaction_id: int = 0
    tags: tuple[str, ...] = field(default=())

    def archival(self) -> dict[str, Any]:
        response = (
            self.response.archival()
            if self.response
            else {
                "code": 0,
                "headers": {},
                "headers_list": [],
                "body": "",
                "body_is_truncated": False,
            }
        )
        request = {
            "url": self.url,
            "method": "GET",
            "body": "",
            "body_is_truncated": False,
            "headers": dict(self.request_headers),
            "headers_list": [list(pair) for pair in self.request_headers],
            "tor": {"exit_ip": None, "exit_name": None, "is_tor": False},
            "x_transport": "tcp",
        }
        return {
            "network": "tcp",
            "address": self.address,
            "alpn": self.alpn,
            "failure": self.failure,
            "request": request,
            "response": response,
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
            "tags": list(self.tags),
            "x_ttfb": self.ttfb,
            "x_body_length": len(self.response.body) if self.response else None,
            "x_body_seconds": self.body_seconds,
        }


def _decode_header(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    kept: list[tuple[str, str]] = []
    total = 0
    for key, value in raw:
        total += len(key) + len(value)
        if total > MAX_HEADER_BYTES:
            break
        kept.append((_decode_header(key), _decode_header(value)))
    return tuple(kept)


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(min(READ_CHUNK, limit - len(body)))
        if not chunk:
            return bytes(body), False
        body += chunk
    truncated = not response.content.at_eof()
    return bytes(body), truncated


class BodyTooLarge(Exception):
    """A message body longer than its reader's cap."""


async def read_whole(content: aiohttp.StreamReader, cap: int,
                     declared: int | None = None) -> bytes:
    """The whole body, to its end (Content-Length, last chunk or EOF), bounded by ``cap``.

    One ``content.read(n)`` returns what has arrived so far: on a real path that is one
    TCP segment, not the message. Raises :class:`BodyTooLarge` as soon as the body is
    known to exceed ``cap`` (a ``declared`` Content-Length, or the cap + 1st byte), so at
    most ``cap + 1`` bytes are ever held. The caller's deadline bounds the time.
    """
    if declared is not None and declared > cap:
        raise BodyTooLarge
    body = bytearray()
    while chunk := await content.read(min(READ_CHUNK, cap + 1 - len(body))):
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge
    return bytes(body)


async def get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    transport: asyncio.Transport,
    held: HeldProtocol,
    address: str,
    alpn: str,
    timeout: float,
    body_limit: int,
    clock: Stopwatch,
    extra_headers: Sequence[tuple[str, str]] = (),
    transaction_id: int = 0,
    tags: tuple[str, ...] = (),
) -> HttpTransaction:
    """GET ``url`` on the handed-over connection; never raises for network trouble."""
    headers = REQUEST_HEADERS + tuple(extra_headers)
    t0 = clock.now()
    ttfb: float | None = None
    body_seconds: float | None = None
    response: HttpResponse | None = None
    failure: str | None = None
    token = _handoff.set((transport, held))
    try:
        async with asyncio.timeout(timeout):
            async with session.get(
                url,
                headers=list(headers),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as resp:
                ttfb = round(clock.now() - t0, 6)
                body, truncated = await _read_body(resp, body_limit)
                body_seconds = round(clock.now() - t0 - ttfb, 6)
                response = HttpResponse(
                    code=resp.status,
                    headers_list=_headers(resp.raw_headers),
                    body=body,
                    body_is_truncated=truncated,
                )
    except Exception as exc:
        failure = classify(exc)
    finally:
        _handoff.reset(token)
        transport.abort()
    return HttpTransaction(
        url=url,
        address=address,
        alpn=alpn,
        failure=failure,
        request_headers=headers,
        response=response,
        t0=t0,
        t=clock.now(),
        ttfb=ttfb,
        body_seconds=body_seconds,
        transaction_id=transaction_id,
        tags=tags,
    )
