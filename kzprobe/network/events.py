"""Network-state events for the shared event log (``events-YYYYMMDD.ndjson``): the envelope
of per-target events with ``input`` null and ``scope`` "network" (README "Network states and
anchors"). Pure: a :class:`~kzprobe.network.state.Transition` in, a draft out; the alerts
service numbers it (``event_version``, ``event_id``, ``seq``: ``kzprobe.alerts.events.number``)
when it writes it (``AlertService.emit``)."""

from __future__ import annotations

import time
from typing import Any

from kzprobe.config.model import ProbeConfig
from kzprobe.network.state import (
    CONTROL_UNREACHABLE,
    DEGRADED,
    DNS_OUTAGE,
    FULL_OUTAGE,
    INTERNATIONAL_OUTAGE,
    ONLINE,
    Transition,
)

_WORDS = {
    ONLINE: "connectivity restored",
    INTERNATIONAL_OUTAGE: "international connectivity lost",
    FULL_OUTAGE: "all connectivity lost",
    DNS_OUTAGE: "resolvers not answering",
    CONTROL_UNREACHABLE: "control helper unreachable",
    DEGRADED: "network degraded (anchors slow)",
}


def utc(ts: float) -> str:
    """``2026-12-07T14:05:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def summary(change: Transition, probe: ProbeConfig) -> str:
    """One line, e.g. "international connectivity lost on AS9198 since 14:05 UTC (3 of 3
    international anchors down)"."""
    since = time.strftime("%H:%M", time.gmtime(change.at))
    down = [c for c in change.evidence if not c.ok]
    detail = (f"{len(down)} of {len(change.evidence)} anchors down" if down else
              f"{len(change.slow)} anchors slow" if change.slow else "all anchors up")
    return f"{_WORDS.get(change.to_state, change.to_state)} on {probe.asn} since {since} UTC " \
           f"({detail})"


def network_event(change: Transition, *, probe: ProbeConfig, probe_id: str | None
                  ) -> dict[str, Any]:
    """The event of one confirmed change, without ``seq`` and ``event_id`` (given when the
    event log writes it)."""
    return {
        "kind": change.kind,
        "input": None,
        "group": None,
        "scope": "network",
        "probe_cc": probe.cc,
        "probe_asn": probe.asn,
        "probe_id": probe_id,
        "category_code": None,
        "from": {"state": change.from_state, "interference": []},
        "to": {"state": change.to_state, "interference": []},
        "at": utc(change.at),
        "confirmed_at": utc(change.confirmed_at),
        "sni_blocking_confirmed": None,
        "blockpage": None,
        "check": change.check_id,
        "evidence": [{**c.evidence(), "check": change.check_id} for c in change.evidence],
        "slow": list(change.slow),
        "summary": summary(change, probe),
    }
