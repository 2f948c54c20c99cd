"""What the metrics thread reads of alerting: one immutable snapshot per scrape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AlertReading:
    """Target states (confirmed), change counts, delivery counts and the outbox size."""

    targets: tuple[tuple[str, str, str], ...] = ()  # (input, group, state), one per target
    changes: tuple[tuple[str, int], ...] = ()  # (kind, confirmed changes since start)
    delivered: int = 0  # messages a webhook acknowledged (2xx)
    failed: int = 0  # POSTs that failed (each retry counts)
    dropped: int = 0  # events dropped undelivered (outbox above max_pending)
    heartbeats_ok: int = 0
    heartbeats_failed: int = 0
    pending: int = 0  # events awaiting delivery, all webhooks together
