"""Webhook delivery: a bounded outbox per webhook drained by one task, at least once.

The outbox holds the events of the log above the webhook's cursor (the last ``seq`` it
acknowledged), oldest first, at most ``max_pending`` (the oldest dropped, logged and
counted). One task per webhook POSTs them in order: a run of more than ``group_above``
events of one sweep and network as one grouped message, any other event alone. A 2xx
moves the cursor, which the owner persists. A 4xx other than 408, 425 and 429 is the
receiver refusing this message (as Alertmanager treats it): retrying the same bytes would
only block every later event behind it, so the message is dropped, logged as an error and
counted (it stays in the event log). Anything else (5xx, 408/425/429, a refused connection,
a timeout) is retried after an exponential backoff from 1 s with jitter, capped at
``max_backoff`` (a ``Retry-After`` is honoured up to the same cap). Retries go on while the
daemon runs: an event leaves the outbox only when delivered or dropped.
Every message carries ``event_id`` in its body and as ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import structlog

from kzprobe import __version__
from kzprobe.alerts.events import sweep_of
from kzprobe.alerts.formats import Body, render
from kzprobe.config.model import AlertsConfig, Webhook

log = structlog.get_logger("kzprobe.alerts")

MATRIX_SEND = "/send/m.room.message"
MAX_GROUP = 500  # events in one grouped message (ids listed): bounds a body
USER_AGENT = f"kzprobe/{__version__}"


@dataclass(slots=True)
class DeliveryStats:
    """Counts the metrics thread reads (ints: a read needs no lock)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    heartbeats_ok: int = 0
    heartbeats_failed: int = 0


def webhook_id(webhook: Webhook) -> str:
    """A stable name for a webhook's cursor: a hash of its URL and format (never the token)."""
    return hashlib.sha256(f"{webhook.format} {webhook.url}".encode()).hexdigest()[:16]


def where(url: str) -> str:
    """What logs may name: scheme and host (a Slack URL's path is its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


RETRIED_4XX = frozenset({408, 425, 429})  # timeout, too early, too many: worth another try


def refused(status: int | None) -> bool:
    """A status that says this message will never be accepted (a 4xx not worth a retry)."""
    return status is not None and 400 <= status < 500 and status not in RETRIED_4XX


def backoff(attempt: int, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry ``attempt`` (0-based): 1, 2, 4, ... s capped, with jitter."""
    ceiling = min(cap, min(1.0, cap) * 2.0 ** min(attempt, 30))
    delay = random.uniform(ceiling / 2, ceiling)
    return min(cap, max(delay, retry_after or 0.0))


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def destination(webhook: Webhook, key: str) -> tuple[str, str]:
    """(method, URL): POST to the URL; for a ``matrix`` webhook that is a homeserver's
    ``.../rooms/<room>/send/m.room.message``, PUT with the idempotency key as the Matrix
    transaction id (the client-server API's own deduplication)."""
    path = urlsplit(webhook.url).path.rstrip("/")
    if webhook.format == "matrix" and path.endswith(MATRIX_SEND):
        return "PUT", f"{webhook.url.rstrip('/')}/{quote(key, safe='')}"
    return "POST", webhook.url


async def post(session: aiohttp.ClientSession, url: str, body: Body, *, token: str | None,
               timeout: float, method: str = "POST") -> tuple[int | None, float | None]:
    """Send ``body``; (status or None when no answer, Retry-After seconds). Never raises."""
    headers = {"Content-Type": body.content_type, "Idempotency-Key": body.key,
               "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with asyncio.timeout(timeout), session.request(
                method, url, data=body.data, headers=headers, allow_redirects=False) as response:
            return response.status, _retry_after(response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log.warning("alert_post_failed", url=where(url), error=type(exc).__name__)
        return None, None


class Outbox:
    """One webhook's undelivered events above its cursor, oldest first, bounded."""

    def __init__(self, webhook: Webhook, cursor: int, config: AlertsConfig,
                 stats: DeliveryStats) -> None:
        self.webhook = webhook
        self.id = webhook_id(webhook)
        self.cursor = cursor
        self.config = config
        self.stats = stats
        self.pending: deque[dict[str, Any]] = deque()
        self.changed = asyncio.Event()

    def add(self, events: list[dict[str, Any]]) -> None:
        """Queue events not yet delivered; beyond max_pending the oldest are dropped."""
        newest = self.pending[-1]["seq"] if self.pending else self.cursor
        for event in events:
            if event["seq"] > newest:
                self.pending.append(event)
                newest = event["seq"]
        excess = len(self.pending) - self.config.max_pending
        if excess > 0:
            for _ in range(excess):
                self.cursor = self.pending.popleft()["seq"]
            self.stats.dropped += excess
            log.warning("alert_events_dropped", webhook=where(self.webhook.url), count=excess,
                        max_pending=self.config.max_pending)
        self.changed.set()

    def next_message(self) -> list[dict[str, Any]]:
        """The head event, or the head's run of one sweep and network when it is long."""
        head = self.pending[0]
        key = (sweep_of(head), head.get("probe_asn"))
        run: list[dict[str, Any]] = []
        for event in self.pending:
            if (sweep_of(event), event.get("probe_asn")) != key or len(run) >= MAX_GROUP:
                break
            run.append(event)
        return run if len(run) > self.config.group_above else [head]

    def delivered(self, message: list[dict[str, Any]]) -> None:
        last = message[-1]["seq"]
        while self.pending and self.pending[0]["seq"] <= last:
            self.pending.popleft()
        self.cursor = max(self.cursor, last)


class Deliverer:
    """The task draining one outbox; ``save`` persists the cursors after each delivery."""

    def __init__(self, outbox: Outbox, session: aiohttp.ClientSession,
                 save: Callable[[], Awaitable[None]]) -> None:
        self.outbox = outbox
        self.session = session
        self.save = save
        self.idle = asyncio.Event()

    async def run(self) -> None:
        attempt = 0
        outbox, config = self.outbox, self.outbox.config
        while True:
            if not outbox.pending:
                self.idle.set()
                outbox.changed.clear()
                await outbox.changed.wait()
                continue
            self.idle.clear()
            message = outbox.next_message()
            try:
                body = render(message, outbox.webhook.format, config.group_first)
            except (TypeError, ValueError, orjson.JSONEncodeError):  # a damaged log line
                log.exception("alert_event_unsendable", event=message[0].get("event_id"))
                outbox.delivered(message)
                outbox.stats.dropped += len(message)
                continue
            method, url = destination(outbox.webhook, body.key)
            status, retry_after = await post(self.session, url, body, method=method,
                                             token=outbox.webhook.token, timeout=config.timeout)
            if status is not None and 200 <= status < 300:
                outbox.delivered(message)
                outbox.stats.delivered += 1
                attempt = 0
                await self.save()
                continue
            outbox.stats.failed += 1
            if refused(status):
                log.error("alert_delivery_refused", webhook=where(outbox.webhook.url),
                          status=status, events=len(message),
                          event_id=message[0].get("event_id"))
                outbox.delivered(message)  # moves the cursor past it: not sent again
                outbox.stats.dropped += len(message)
                attempt = 0
                await self.save()
                continue
            delay = backoff(attempt, config.max_backoff, retry_after)
            log.warning("alert_delivery_retry", webhook=where(outbox.webhook.url),
                        status=status, events=len(message), retry_in=round(delay, 2))
            attempt += 1
            await asyncio.sleep(delay)
