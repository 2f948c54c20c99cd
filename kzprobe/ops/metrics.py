"""Prometheus metrics and ``/healthz``, served from a thread on ``service.metrics_listen``.

The server runs in its own (daemon) thread with a private registry, so a scrape works
and ``/healthz`` answers 503 even while the event loop is blocked, which is exactly
when an operator needs it. Event-driven counts (measurements, sweeps, reloads) are
prometheus-client metrics updated on the loop; counters the engine and the writer
already keep are read at scrape time by :class:`_Mirror` (reads only, no locks needed).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from kzprobe import __version__
from kzprobe.alerts.reading import AlertReading
from kzprobe.errors import KzprobeError
from kzprobe.measure.traffic import record_bytes
from kzprobe.network.state import STATES as NETWORK_STATES
from kzprobe.verdict.outcome import OUTCOMES, outcome

SWEEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_REQUEST_TIMEOUT = 5.0  # seconds a scraper may take to send its request


@dataclass(frozen=True, slots=True)
class Reading:
    """Values the daemon's parts keep themselves, read once per scrape."""

    in_flight: int
    queue_depth: int
    rate_limit_waits: int
    records_written: int
    bytes_written: int
    write_errors: int
    segments_rotated: int
    segments_compressed: int
    writer_blocked: bool
    targets: int
    loop_lag: float
    loop_lag_max: float
    analysis_workers_started: int = 0
    analysis_inline: bool = False


class _Mirror(Collector):
    """Exports the engine's and writer's own counters at scrape time."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        r = self._read()
        counters = {
            "rate_limit_waits": ("Times a measurement waited for the rate limiter.",
                                 r.rate_limit_waits),
            "records_written": ("Records written to segments.", r.records_written),
            "bytes_written": ("Bytes written to segments (uncompressed).", r.bytes_written),
            "write_errors": ("Failed writes (ENOSPC, EROFS, ...), retries included.",
                             r.write_errors),
            "segments_rotated": ("Segments closed and published.", r.segments_rotated),
            "segments_compressed": ("Closed segments compressed.", r.segments_compressed),
            "analysis_workers_started": ("Analysis worker processes started (more than one: "
                                         "restarts after a crash or a stuck analysis).",
                                         r.analysis_workers_started),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"kzprobe_{name}", doc, value=value)
        gauges = {
            "probes_in_flight": ("Measurements running now.", r.in_flight),
            "queue_depth": ("Targets queued for the worker pool.", r.queue_depth),
            "writer_blocked": ("1 while writes fail and probing is paused.",
                               int(r.writer_blocked)),
            "targets": ("Targets in the current list.", r.targets),
            "event_loop_lag_seconds": ("How late the event loop runs a timer now.", r.loop_lag),
            "event_loop_lag_max_seconds": ("Worst event-loop lag since start.", r.loop_lag_max),
            "analysis_inline": ("1 when verdicts are computed on the measuring loop (no "
                                "worker: configured so, or workers kept dying).",
                                int(r.analysis_inline)),
        }
        for name, (doc, number) in gauges.items():
            yield GaugeMetricFamily(f"kzprobe_{name}", doc, value=number)


class _AlertMirror(Collector):
    """Alerting at scrape time: each target's confirmed state (one series per target, so
    the cardinality is the number of targets), changes, deliveries and the outbox."""

    def __init__(self, read: Callable[[], AlertReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        r = self._read()
        state = GaugeMetricFamily("kzprobe_target_state", "1 for each target, labelled with "
                                  "its confirmed state (ok, blocked, down, unknown).",
                                  labels=["input", "group", "state"])
        for target, group, value in r.targets:
            state.add_metric([target, group, value], 1)
        yield state
        yield _labelled_counter("kzprobe_target_changes", "Confirmed changes of target "
                                "state, by kind.", "kind", r.changes)
        yield _labelled_counter("kzprobe_alert_deliveries", "Webhook POSTs acknowledged "
                                "(delivered) or failed, and events dropped undelivered.",
                                "result", (("delivered", r.delivered), ("failed", r.failed),
                                           ("dropped", r.dropped)))
        yield _labelled_counter("kzprobe_alert_heartbeats", "Heartbeat POSTs, by result.",
                                "result", (("ok", r.heartbeats_ok),
                                           ("failed", r.heartbeats_failed)))
        yield GaugeMetricFamily("kzprobe_alert_pending", "Events awaiting webhook delivery.",
                                value=r.pending)


class UploadReading(Protocol):
    """What the uploader's stats offer (kzprobe.upload.uploader.UploadStats): ints."""

    submitted: int
    rejected: int
    skipped: int
    retried: int
    pending: int


class _UploadMirror(Collector):
    """``[upload]`` at scrape time: records submitted to the OONI collector, and waiting."""

    def __init__(self, stats: UploadReading) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield _labelled_counter("kzprobe_upload", "Records through the OONI collector upload: "
                                "submitted (200), rejected (refused with a 4xx: not retried), "
                                "skipped (anchors, interrupted, unreadable lines), and "
                                "retried attempts (429, 5xx, timeouts).", "result",
                                (("submitted", s.submitted), ("rejected", s.rejected),
                                 ("skipped", s.skipped), ("retried", s.retried)))
        yield GaugeMetricFamily("kzprobe_upload_pending", "Records in closed segments after "
                                "the upload cursor (not yet submitted, rejected or skipped).",
                                value=s.pending)


def _labelled_counter(name: str, doc: str, label: str,
                      values: Iterable[tuple[str, int]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


class Metrics:
    """The daemon's metrics, in a registry of their own (tests run several daemons)."""

    def __init__(self, read: Callable[[], Reading],
                 alerts: Callable[[], AlertReading] | None = None) -> None:
        self.registry = reg = CollectorRegistry()
        self.measurements = Counter("kzprobe_measurements", "Measurements written, by result.",
                                    ["result"], registry=reg)
        self.interference = Counter("kzprobe_interference", "Interference codes recorded.",
                                    ["code"], registry=reg)
        self.control_failures = Counter("kzprobe_control_failures",
                                        "Measurements whose control request failed.",
                                        registry=reg)
        self.network_bytes = Counter("kzprobe_network_bytes",
                                     "Bytes measurements moved over the network (x_bytes: "
                                     "TCP stream incl. TLS, UDP payloads, DNS), by direction.",
                                     ["direction"], registry=reg)
        self.sweep_duration = Histogram("kzprobe_sweep_duration_seconds",
                                        "Duration of finished sweeps.", buckets=SWEEP_BUCKETS,
                                        registry=reg)
        self.last_sweep = Gauge("kzprobe_last_successful_sweep_timestamp_seconds",
                                "Unix time the last complete sweep finished.", registry=reg)
        self.group_last_sweep = Gauge(
            "kzprobe_group_last_sweep_timestamp_seconds",
            "Unix time the group's last complete sweep finished.", ["group"], registry=reg)
        self.group_interval = Gauge(
            "kzprobe_group_interval_seconds",
            "The group's configured sweep interval (silence is 2 of these without a sweep).",
            ["group"], registry=reg)
        self.reloads = Counter("kzprobe_config_reloads", "SIGHUP reloads, by result.",
                               ["result"], registry=reg)
        self.retention_deleted = Counter("kzprobe_retention_deleted_segments",
                                         "Closed segments deleted by retention.", registry=reg)
        self.retention_freed = Counter("kzprobe_retention_freed_bytes",
                                       "Bytes freed by retention.", registry=reg)
        Gauge("kzprobe_build_info", "kzprobe version.", ["version"],
              registry=reg).labels(__version__).set(1)
        for result in OUTCOMES:
            self.measurements.labels(result)  # export zeros, so rates work from the start
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.network_state = Gauge("kzprobe_network_state", "1 for the confirmed network "
                                   "state ([network] anchors), 0 for the others.", ["state"],
                                   registry=reg)
        for direction in ("sent", "received"):
            self.network_bytes.labels(direction)
        reg.register(_Mirror(read))
        if alerts is not None:
            reg.register(_AlertMirror(alerts))
        ProcessCollector(registry=reg)

    def add_upload(self, stats: UploadReading) -> None:
        """Export the uploader's counts (the daemon calls this when ``[upload]`` is on)."""
        self.registry.register(_UploadMirror(stats))

    def set_network_state(self, state: str) -> None:
        """Export the confirmed network state (one series per state, bounded: 6)."""
        for name in NETWORK_STATES:
            self.network_state.labels(name).set(int(name == state))

    def observe(self, record: dict[str, Any]) -> None:
        """Count one written record."""
        self.measurements.labels(outcome(record)).inc()
        keys = record.get("test_keys") or {}
        for code in _codes(keys.get("interference")):
            self.interference.labels(code).inc()
        if keys.get("control_failure"):
            self.control_failures.inc()
        sent, received = record_bytes(record)
        self.network_bytes.labels("sent").inc(sent)
        self.network_bytes.labels("received").inc(received)


def _codes(value: object) -> Iterable[str]:
    if not isinstance(value, list):
        return ()
    return (str(code)[:64] for code in value)


# --------------------------------------------------------------------------- HTTP server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (journald would fill with scrapes); bounded request read."""

    timeout = _REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9108`` / ``[::1]:9108`` -> (host, port); the config validated the form."""
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    ipaddress.ip_address(host)
    return host, int(port)


Health = Callable[[], list[str]]
Details = Callable[[], dict[str, str]]  # notes that are not problems (a stretched schedule)
_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _health_app(health: Health, details: Details | None) -> _WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = health()
        answer: dict[str, Any] = {"status": "fail" if found else "ok", "problems": found}
        if details is not None:
            answer["details"] = details()
        body = orjson.dumps(answer) + b"\n"
        start_response("503 Service Unavailable" if found else "200 OK",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))])
        return [body]

    return app


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"try /metrics or /healthz\n"]


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` (200 or 503 + JSON reasons)."""

    def __init__(self, registry: CollectorRegistry, health: Health,
                 details: Details | None = None) -> None:
        routes: dict[str, _WsgiApp] = {"/metrics": make_wsgi_app(registry),
                                       "/healthz": _health_app(health, details)}
        self._routes = routes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self._routes.get(environ.get("PATH_INFO", ""), _not_found)(environ, start_response)

    def start(self, listen: str) -> str:
        """Bind and serve in a thread; return the address actually bound (port 0 -> real port)."""
        host, port = split_listen(listen)
        server_class = type("_Bound", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        except OSError as exc:
            raise KzprobeError(f"service.metrics_listen {listen}: cannot listen: "
                               f"{exc.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,),
                                        name="kzprobe-metrics", daemon=True)
        self._thread.start()
        bound_port = int(self._server.server_address[1])
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"

    def close(self) -> None:
        """Stop serving (blocks for up to one poll interval): call it from a thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
