"""A local OONI collector written to ooni/spec backends/bk-003-collector.md (v3.0.0).

It validates every request strictly (content type, JSON object, required fields and
their patterns, the report id known, open and not expired, the measurement's report_id
and metadata matching its report, df-000-base's top-level keys) and answers as the spec
says; every request that breaks the spec is also kept in ``violations`` so a test can
require none. Faults are injected per request (429 with Retry-After, 500, 400), report ids
can be expired, and the server can be stopped and started again on the same port
(downtime). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

ASN = re.compile(r"AS[0-9]{1,10}")
CC = re.compile(r"[A-Z]{2}")
NAME = re.compile(r"[0-9A-Za-z_.+-]+")
OPEN_REQUIRED = {"data_format_version": None, "format": None, "probe_asn": ASN, "probe_cc": CC,
                 "software_name": NAME, "software_version": NAME, "test_name": NAME,
                 "test_version": NAME}
OPEN_OPTIONAL = {"content", "input_hashes", "probe_ip", "test_helper", "test_start_time"}
# df-000-base keys a client must send (bucket_date, report_filename ... are the pipeline's)
MEASUREMENT_REQUIRED = ("data_format_version", "input", "measurement_start_time", "probe_asn",
                        "probe_cc", "probe_ip", "report_id", "software_name",
                        "software_version", "test_keys", "test_name", "test_runtime",
                        "test_start_time", "test_version")
TEMPLATE_KEYS = ("probe_asn", "probe_cc", "software_name", "software_version", "test_name",
                 "test_version")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Invalid(Exception):
    """A request the spec says to refuse: (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Fault:
    """An injected answer for the next matching request: ``step`` is open, update or any."""

    status: int
    step: str = "any"
    retry_after: str | None = None


@dataclass
class Report:
    report_id: str
    template: dict[str, str]
    closed: bool = False
    expired: bool = False


@dataclass
class CollectorServer:
    reports: dict[str, Report] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)  # accepted contents
    bodies: list[bytes] = field(default_factory=list)  # every raw request body received
    violations: list[str] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    refuse_uids: set[str] = field(default_factory=set)  # measurements answered with 400
    requests: Counter[str] = field(default_factory=Counter)  # by step and status
    times: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, step) each
    delay: float = 0.0  # seconds each update takes (keeps measurements in flight)
    active: int = 0  # updates being answered now
    most_active: int = 0  # the most at once
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uids(self) -> list[str]:
        return [str(m.get("x_measurement_uid")) for m in self.measurements]

    def expire_reports(self) -> None:
        """Every report id issued so far is no longer open (a collector's stale-report timer)."""
        for report in self.reports.values():
            report.expired = True

    # -- lifecycle

    async def start(self) -> CollectorServer:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_post("/report", self._open)
        app.router.add_post("/report/{report_id}", self._update)
        app.router.add_post("/report/{report_id}/close", self._close)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Down: the port refuses connections until :meth:`start` (same port) again."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- handlers

    async def _answer(self, step: str, request: web.Request, handle: Any) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.times.append((time.monotonic(), step))
        fault = self._fault(step)
        if fault is not None:
            self.requests[f"{step} {fault.status} injected"] += 1
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.json_response({"error": "injected"}, status=fault.status,
                                     headers=headers)
        try:
            answer = handle(request, body)
        except Invalid as exc:
            self.requests[f"{step} {exc.status}"] += 1
            if not exc.reason.startswith("refused:"):
                self.violations.append(f"{step}: {exc.reason}")
            return web.json_response({"error": exc.reason}, status=exc.status)
        self.requests[f"{step} 200"] += 1
        return web.json_response(answer)

    def _fault(self, step: str) -> Fault | None:
        for fault in self.faults:
            if fault.step in (step, "any"):
                self.faults.remove(fault)
                return fault
        return None

    async def _open(self, request: web.Request) -> web.Response:
        return await self._answer("open", request, self._open_report)

    async def _update(self, request: web.Request) -> web.Response:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer("update", request, self._update_report)
        finally:
            self.active -= 1

    async def _close(self, request: web.Request) -> web.Response:
        return await self._answer("close", request, self._close_report)

    # -- the spec

    def _open_report(self, request: web.Request, body: bytes) -> dict[str, Any]:
        data = _json_object(request, body)
        unknown = data.keys() - OPEN_REQUIRED.keys() - OPEN_OPTIONAL
        if unknown:
            raise Invalid(400, f"unknown open fields {sorted(unknown)}")
        for key, pattern in OPEN_REQUIRED.items():
            value = data.get(key)
            if not isinstance(value, str):
                raise Invalid(400, f"{key} missing or not a string")
            if pattern is not None and pattern.fullmatch(value) is None:
                raise Invalid(400, f"{key} {value!r} does not match the spec")
        if data["data_format_version"] != "0.2.0" or data["format"] != "json":
            raise Invalid(400, "data_format_version must be 0.2.0 and format json")
        if "content" in data or "test_helper" in data:
            raise Invalid(500, "legacy content/test_helper not supported")
        if "probe_ip" in data:
            raise Invalid(400, "probe_ip sent when opening a report (deprecated, private)")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        report_id = f"{stamp}_{data['probe_asn']}_{secrets.token_urlsafe(32)}"
        self.reports[report_id] = Report(report_id, {k: data[k] for k in TEMPLATE_KEYS})
        return {"backend_version": "1.0.0", "report_id": report_id,
                "supported_formats": ["json"]}

    def _report(self, request: web.Request) -> Report:
        report = self.reports.get(request.match_info["report_id"])
        if report is None:
            raise Invalid(404, "unknown report id")
        if report.closed or report.expired:
            raise Invalid(400, "refused: report is not open")
        return report

    def _update_report(self, request: web.Request, body: bytes) -> dict[str, Any]:
        data = _json_object(request, body)
        report = self._report(request)
        if set(data) != {"content", "format"} or data["format"] != "json":
            raise Invalid(400, f"update must be {{content, format: json}}, got {sorted(data)}")
        content = data["content"]
        if not isinstance(content, dict):
            raise Invalid(400, "content is not a JSON object")
        _check_measurement(content, report)
        if content.get("x_measurement_uid") in self.refuse_uids:
            raise Invalid(400, "refused: this measurement is refused by policy")
        self.measurements.append(content)
        return {"measurement_id": secrets.token_hex(8)}

    def _close_report(self, request: web.Request, body: bytes) -> dict[str, Any]:
        report = self._report(request)
        report.closed = True
        return {"status": "success"}


def _json_object(request: web.Request, body: bytes) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Invalid(400, f"Content-Type {request.content_type!r}, not application/json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid(400, "body does not parse as JSON") from None
    if not isinstance(data, dict):
        raise Invalid(400, "body is not a JSON object")
    return data


def _check_measurement(content: dict[str, Any], report: Report) -> None:
    missing = [key for key in MEASUREMENT_REQUIRED if key not in content]
    if missing:
        raise Invalid(400, f"measurement lacks {missing}")
    if content["report_id"] != report.report_id:
        raise Invalid(400, "content report_id differs from the URL's")
    for key in TEMPLATE_KEYS:
        if content[key] != report.template[key]:
            raise Invalid(400, f"{key} {content[key]!r} differs from the report's")
    if content["probe_ip"] != "127.0.0.1":
        raise Invalid(400, f"probe_ip {content['probe_ip']!r} is not scrubbed")
    for key in ("measurement_start_time", "test_start_time"):
        try:
            datetime.strptime(content[key], TIME_FORMAT)
        except (TypeError, ValueError):
            raise Invalid(400, f"{key} {content[key]!r} is not {TIME_FORMAT}") from None
    if not isinstance(content["test_keys"], dict):
        raise Invalid(400, "test_keys is not an object")
    if not isinstance(content["test_runtime"], int | float):
        raise Invalid(400, "test_runtime is not a number")
