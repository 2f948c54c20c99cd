"""Change events as written to ``events-YYYYMMDD.ndjson`` (SPEC16): built from a confirmed
:class:`~kzprobe.alerts.state.Change`, numbered when written, read back after a restart.
Pure: no I/O, times are passed in."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from kzprobe.alerts.state import STATES, Change, Observation, Ref, State

EVENT_VERSION = 1
DEFAULT_PROBE_ID = "probe"


def utc_iso(unix: float) -> str:
    """``2026-12-07T14:06:02Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def record_time_iso(start_time: str | None) -> str | None:
    """A record's ``2026-12-07 14:05:00`` as ``2026-12-07T14:05:00Z``."""
    if not start_time:
        return None
    return start_time.replace(" ", "T", 1) + ("" if start_time.endswith("Z") else "Z")


def _side(obs: Observation | None) -> dict[str, Any]:
    if obs is None:
        return {"state": "unknown", "interference": []}
    return {"state": obs.state, "interference": list(obs.codes)}


def draft(change: Change, probe_id: str | None) -> dict[str, Any]:
    """The event of a confirmed change, without ``seq`` and ``event_id`` (given when written)."""
    to = change.to
    event: dict[str, Any] = {
        "kind": change.kind, "input": to.input, "group": to.group, "probe_cc": to.probe_cc,
        "probe_asn": to.probe_asn, "probe_id": probe_id or to.probe_id or DEFAULT_PROBE_ID,
        "category_code": to.category_code, "from": _side(change.frm), "to": _side(to),
        "at": record_time_iso(change.at), "confirmed_at": utc_iso(change.confirmed_at),
        "sni_blocking_confirmed": to.sni_blocking_confirmed, "blockpage": to.blockpage,
        "evidence": [ref.as_evidence() for ref in change.evidence],
    }
    event["summary"] = summary(event)
    return event


def number(event: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """The event as written: version, id and sequence number first, then its body."""
    digest = hashlib.sha256(
        f"{event.get('input')}\n{event.get('kind')}\n{event.get('at')}".encode()).hexdigest()
    numbered = {"event_version": EVENT_VERSION,
                "event_id": f"{event.get('probe_id') or DEFAULT_PROBE_ID}-{seq}-{digest[:8]}",
                "seq": seq}
    numbered.update((k, v) for k, v in event.items() if k not in numbered)
    return numbered


def _since(event: Mapping[str, Any]) -> str:
    """``14:05 UTC`` on the day the change was confirmed, else ``2026-12-06 23:55 UTC``."""
    at, confirmed = event.get("at"), event.get("confirmed_at") or ""
    if not isinstance(at, str) or len(at) < 16:
        return "now"
    clock = at[11:16]
    return f"{clock} UTC" if at[:10] == confirmed[:10] else f"{at[:10]} {clock} UTC"


def _mechanism(side: Mapping[str, Any]) -> str:
    return ", ".join(side.get("interference") or []) or "no interference code"


def summary(event: Mapping[str, Any]) -> str:
    """One readable line: ``https://twitter.com/ blocked on AS9198 since 14:05 UTC
    (tls.timeout, SNI confirmed)``."""
    target, asn, kind = event.get("input"), event.get("probe_asn"), event.get("kind")
    since = _since(event)
    frm, to = event.get("from") or {}, event.get("to") or {}
    if kind in ("blocked", "mechanism_changed"):
        details = [_mechanism(to)]
        if event.get("sni_blocking_confirmed") is True:
            details.append("SNI confirmed")
        if event.get("blockpage"):
            details.append(f"blockpage {event['blockpage']}")
        verb = "blocked" if kind == "blocked" else f"blocked differently (was {_mechanism(frm)})"
        return f"{target} {verb} on {asn} since {since} ({', '.join(details)})"
    if kind == "unblocked":
        return f"{target} unblocked on {asn} since {since} (was {_mechanism(frm)})"
    if kind == "down":
        return f"{target} down on {asn} since {since} (the site's own failure, not a block)"
    if kind == "up":
        return f"{target} up again on {asn} since {since}"
    return f"{target} {kind} on {asn} since {since}"


def sweep_of(event: Mapping[str, Any]) -> str | None:
    """The sweep of the record that confirmed the change (its last piece of evidence)."""
    evidence = event.get("evidence")
    if isinstance(evidence, list) and evidence and isinstance(evidence[-1], Mapping):
        sweep = evidence[-1].get("sweep")
        return sweep if isinstance(sweep, str) else None
    return None


def settled(event: Mapping[str, Any]) -> Observation | None:
    """The confirmed state an event leaves its target in (replay), or None (not a target's)."""
    to, subject, asn = event.get("to"), event.get("input"), event.get("probe_asn")
    if not isinstance(to, Mapping) or not isinstance(subject, str) or not isinstance(asn, str):
        return None
    state = to.get("state")
    if state not in STATES:
        return None
    codes = to.get("interference")
    state_: State = state
    evidence = event.get("evidence")
    last = evidence[-1] if isinstance(evidence, list) and evidence else {}
    last = last if isinstance(last, Mapping) else {}
    ref = Ref(uid=last.get("measurement_uid"), start_time=last.get("measurement_start_time"),
              sweep=last.get("sweep"))
    return Observation(input=subject, probe_asn=asn, state=state_,
                       codes=tuple(str(c) for c in codes) if isinstance(codes, list) else (),
                       ref=ref, group=str(event.get("group") or "default"),
                       probe_cc=event.get("probe_cc"), probe_id=event.get("probe_id"),
                       category_code=event.get("category_code"))
