"""The tracker as JSON for ``alerts-state.json``: confirmed states, candidates, the last
event number and the changes confirmed but not yet written. Pure conversions; a damaged
entry is skipped, never fatal (the target then starts afresh)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kzprobe.alerts.state import STATES, Entry, Observation, Ref, Tracker

STATE_VERSION = 1
STATE_FILE = "alerts-state.json"
OUTBOX_FILE = "alerts-outbox.json"


def _observation(raw: Any) -> Observation | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        ref = Ref(**raw["ref"])
        fields = {k: v for k, v in raw.items() if k != "ref"}
        obs = Observation(**{**fields, "codes": tuple(fields.get("codes") or ()), "ref": ref})
    except (KeyError, TypeError):
        return None
    ok = isinstance(obs.input, str) and isinstance(obs.probe_asn, str) and obs.state in STATES
    return obs if ok else None


def _entry(raw: Mapping[str, Any]) -> Entry | None:
    confirmed = _observation(raw.get("confirmed"))
    candidate = [_observation(o) for o in raw.get("candidate") or ()]
    kept = [o for o in candidate if o is not None]
    if len(kept) != len(candidate) or not (confirmed or kept):
        return None
    last_seen, streak = raw.get("last_seen"), raw.get("unknown_streak")
    group = raw.get("group")
    return Entry(confirmed=confirmed, candidate=kept,
                 unknown_streak=streak if isinstance(streak, int) else 0,
                 last_seen=float(last_seen) if isinstance(last_seen, int | float) else 0.0,
                 group=group if isinstance(group, str) else (confirmed or kept[0]).group)


def dump(tracker: Tracker, seq: int, drafts: list[dict[str, Any]]) -> dict[str, Any]:
    """The state file's content, a snapshot cheap to take on the loop: observations are
    frozen dataclasses, which orjson serialises itself (off the loop)."""
    entries = [{"confirmed": entry.confirmed, "candidate": list(entry.candidate),
                "unknown_streak": entry.unknown_streak, "last_seen": entry.last_seen,
                "group": entry.group} for entry in tracker.entries.values()]
    return {"version": STATE_VERSION, "seq": seq, "entries": entries, "drafts": list(drafts)}


def load(raw: Mapping[str, Any] | None, tracker: Tracker) -> tuple[int, list[dict[str, Any]]]:
    """Fill ``tracker`` from a state file; return (last event seq, unwritten drafts)."""
    if not raw or raw.get("version") != STATE_VERSION:
        return 0, []
    for item in raw.get("entries") or ():
        entry = _entry(item) if isinstance(item, Mapping) else None
        if entry is not None:
            first = entry.confirmed or entry.candidate[0]
            tracker.entries[(first.input, first.probe_asn)] = entry
            tracker.revision += 1
    seq = raw.get("seq")
    drafts = [d for d in raw.get("drafts") or () if isinstance(d, dict)]
    return (seq if isinstance(seq, int) else 0), drafts
