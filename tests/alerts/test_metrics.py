"""Alerting in Prometheus: target states, changes, deliveries, the outbox."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from kzprobe.config.model import Webhook
from kzprobe.ops.metrics import Metrics, Reading
from tests.alerts.conftest import MakeAlerts, Receiver, alerts_config, blocked, ok
from tests.servers import eventually

IDLE = Reading(in_flight=0, queue_depth=0, rate_limit_waits=0, records_written=0,
               bytes_written=0, write_errors=0, segments_rotated=0, segments_compressed=0,
               writer_blocked=False, targets=0, loop_lag=0.0, loop_lag_max=0.0)


async def test_alert_metrics(tmp_path: Path, receiver: Receiver,
                             make_alerts: MakeAlerts) -> None:
    """One state series per target, changes by kind, deliveries and pending from Alerts."""
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    metrics = Metrics(lambda: IDLE, alerts.reading)
    for n in range(2):
        alerts.observe(blocked("https://a.test/", sweep=f"s{n}"))
        alerts.observe(ok("https://b.test/", sweep=f"s{n}"))
        await alerts.sweep_finished("watch", f"s{n}", records=2)
    await eventually(lambda: alerts.reading().delivered == 1, timeout=30)
    text = generate_latest(metrics.registry).decode()
    assert 'kzprobe_target_state{group="watch",input="https://a.test/",state="blocked"} 1.0' \
        in text
    assert 'kzprobe_target_state{group="watch",input="https://b.test/",state="ok"} 1.0' in text
    assert text.count("kzprobe_target_state{") == 2
    assert 'kzprobe_target_changes_total{kind="blocked"} 1.0' in text
    assert 'kzprobe_target_changes_total{kind="unblocked"} 0.0' in text
    assert 'kzprobe_alert_deliveries_total{result="delivered"} 1.0' in text
    assert "kzprobe_alert_pending 0.0" in text


def test_metrics_without_alerts_have_no_alert_series() -> None:
    """The alerts collector is optional: existing metrics are unchanged without it."""
    text = generate_latest(Metrics(lambda: IDLE).registry).decode()
    assert "kzprobe_target_state" not in text and "kzprobe_records_written_total" in text
