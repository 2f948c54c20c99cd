"""The probe side of the control vantage: OONI's THRequest to a test helper, with failover.

The control is what lets a verdict say "blocked here" rather than "down": the helper,
outside the censored network, resolves, connects and fetches the same URL. A control
failure is recorded (``control_failure``) and never blocks the measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from kzprobe import failures
from kzprobe.config import ControlHelper
from kzprobe.errors import HttpFailure, classify
from kzprobe.measure.context import ControlResult
from kzprobe.measure.headers import REQUEST_HEADERS
from kzprobe.measure.steps.http import BodyTooLarge, read_whole

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_FORWARDED = ("Accept", "Accept-Language", "User-Agent")


def th_request(url: str, endpoints: Sequence[str], *,
               quic_always: bool = False) -> dict[str, Any]:
    """OONI's THRequest for ``url`` and the probe's ``ip:port`` endpoints. ``x_quic_enabled``
    for https: the helper tries HTTP/3 as the probe does (kzprobe's ``x_quic_always``: even
    without an Alt-Svc, for ``[http3] always``)."""
    headers = {k: [v] for k, v in REQUEST_HEADERS if k in _FORWARDED}
    https = url.lower().startswith("https://")
    request = {"http_request": url, "http_request_headers": headers,
               "tcp_connect": list(endpoints), "x_quic_enabled": https}
    if https and quic_always:
        request["x_quic_always"] = True
    return request


class ControlClient:
    """Posts THRequests to the configured helpers, in order, until one answers.

    Each helper's token goes in that request only (never a session-wide header, never to
    another helper), and redirects are not followed: a helper does not redirect, and a
    redirect could carry the request (and its token) to a server nobody configured.
    """

    def __init__(self, helpers: Sequence[ControlHelper], *, timeout: float,
                 concurrency: int = 20, quic_always: bool = False) -> None:
        self.quic_always = quic_always
        self.urls = tuple(helper.url for helper in helpers)
        self._auth = [{"Authorization": f"Bearer {helper.token}"} if helper.token else {}
                      for helper in helpers]
        self.timeout = timeout
        self._gate = asyncio.Semaphore(concurrency)
        headers = {"Content-Type": "application/json", "User-Agent": "kzprobe"}
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=64, use_dns_cache=True))

    async def aclose(self) -> None:
        await self._session.close()

    async def query(self, url: str, endpoints: Sequence[str]) -> ControlResult:
        """Ask each helper in turn; the first valid THResponse wins."""
        payload = orjson.dumps(th_request(url, endpoints, quic_always=self.quic_always))
        failure = "control_unavailable"
        async with self._gate:
            for helper, auth in zip(self.urls, self._auth, strict=True):
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await self._post(helper, payload, auth)
                    return ControlResult(response, None, helper)
                except Exception as exc:
                    failure = classify(exc)
        return ControlResult(None, failure, None)

    async def _post(self, helper: str, payload: bytes, auth: dict[str, str]) -> dict[str, Any]:
        async with self._session.post(helper, data=payload, headers=auth,
                                      allow_redirects=False) as resp:
            if resp.status != 200:
                raise HttpFailure(failures.HTTP_REQUEST_FAILED)
            try:
                body = await read_whole(resp.content, MAX_RESPONSE_BYTES, resp.content_length)
            except BodyTooLarge:
                raise HttpFailure(failures.HTTP_REQUEST_FAILED) from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HttpFailure(failures.JSON_PARSE_ERROR) from None
        if not isinstance(data, dict) or not isinstance(data.get("tcp_connect", {}), dict):
            raise HttpFailure(failures.JSON_PARSE_ERROR)
        return data
