"""OONI's collector protocol, client side (ooni/spec backends/bk-003-collector.md, v3.0.0).

A report is opened per template (``POST /report`` with the metadata a measurement shares
with its report), measurements are appended to it (``POST /report/{report_id}`` with
``{"content": <measurement>, "format": "json"}``, the measurement's ``report_id`` set to
the report's), and it is closed (``POST /report/{report_id}/close``, legacy but harmless).
The spec has no single-shot submission. Bodies are sent uncompressed, as the spec asks of
clients until every collector takes gzip. Every call returns a :class:`Reply`, never
raises: the uploader decides what a status means.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import structlog

from kzprobe import __version__

log = structlog.get_logger("kzprobe.upload")

DATA_FORMAT_VERSION = "0.2.0"  # the only version the spec (and OONI's probe) open reports with
FORMAT = "json"
USER_AGENT = f"kzprobe/{__version__}"
MAX_REPLY_BYTES = 64 * 1024  # a collector's answer is a small JSON object
# The spec's patterns for the fields of an open request.
PATTERNS = {
    "probe_asn": re.compile(r"AS[0-9]{1,10}"),
    "probe_cc": re.compile(r"[A-Z]{2}"),
    "software_name": re.compile(r"[0-9A-Za-z_.+-]+"),
    "software_version": re.compile(r"[0-9A-Za-z_.+-]+"),
    "test_name": re.compile(r"[0-9A-Za-z_.+-]+"),
    "test_version": re.compile(r"[0-9A-Za-z_.+-]+"),
}

Template = tuple[tuple[str, str], ...]  # the open request's fields: one report per template


@dataclass(frozen=True, slots=True)
class Reply:
    """A collector's answer: the status (None: no answer, a timeout or a refused connection),
    its JSON object (empty if none), and a Retry-After in seconds (429/503)."""

    status: int | None
    body: Mapping[str, Any]
    retry_after: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def template(record: Mapping[str, Any]) -> Template | None:
    """The open-report fields a record implies, or None when one breaks the spec's pattern
    (such a record could never be accepted)."""
    fields = [("data_format_version", DATA_FORMAT_VERSION), ("format", FORMAT)]
    for key, pattern in PATTERNS.items():
        value = record.get(key)
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            return None
        fields.append((key, value))
    return tuple(fields)


def where(url: str) -> str:
    """What logs may name: scheme and host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


class CollectorClient:
    """The three calls of the spec against one collector base URL."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = timeout

    async def open_report(self, fields: Template) -> Reply:
        """``POST /report``: a 200 must carry a report_id and list "json" as supported."""
        reply = await self._post("/report", orjson.dumps(dict(fields)))
        if not reply.ok:
            return reply
        report_id = reply.body.get("report_id")
        formats = reply.body.get("supported_formats")
        if not isinstance(report_id, str) or not report_id:
            return Reply(None, reply.body, error="open: no report_id in the 200 answer")
        if not isinstance(formats, list) or FORMAT not in formats:
            return Reply(None, reply.body, error="open: the collector does not take json")
        return reply

    async def update(self, report_id: str, body: bytes) -> Reply:
        """``POST /report/{report_id}`` with an already serialised update body."""
        return await self._post(f"/report/{quote(report_id, safe='')}", body)

    async def close(self, report_id: str) -> Reply:
        """``POST /report/{report_id}/close`` (legacy in the spec; OONI's server accepts it)."""
        return await self._post(f"/report/{quote(report_id, safe='')}/close", None)

    async def _post(self, path: str, data: bytes | None) -> Reply:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self.timeout), self.session.post(
                    self.base_url + path, data=data or b"", headers=headers,
                    allow_redirects=False) as response:
                raw = await response.content.read(MAX_REPLY_BYTES)
                return Reply(response.status, _json_object(raw),
                             _retry_after(response.headers.get("Retry-After")))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return Reply(None, {}, error=type(exc).__name__)


def update_body(record: Mapping[str, Any], report_id: str) -> bytes:
    """The update request: the measurement with the report's id, as the spec requires."""
    content = {**record, "report_id": report_id}
    return orjson.dumps({"content": content, "format": FORMAT})


def _json_object(raw: bytes) -> Mapping[str, Any]:
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
