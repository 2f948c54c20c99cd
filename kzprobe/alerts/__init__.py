"""Alerting: per-target state with hysteresis, durable change events, webhooks (issue 16).

Modules: ``state`` (pure: records -> observations -> confirmed changes), ``events`` (the
event objects of ``events-*.ndjson``), ``journal`` (the event log and the atomic state
files), ``store`` (the tracker as JSON), ``formats`` (webhook bodies), ``delivery`` (outbox
and POSTs), ``core`` (:class:`~kzprobe.alerts.core.Alerts`, what the daemon calls) and
``reading`` (the metrics snapshot). Import from the submodules.
"""
