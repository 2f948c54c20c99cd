"""Per-target state with hysteresis: records in, confirmed changes out. Pure: no I/O, no clock.

A record is classified into an :class:`Observation`: ``blocked`` (any interference code, or
OONI's ``blocking`` naming a step), ``down`` (``blocking`` False and ``accessible`` False:
the site's own failure), ``ok`` (``blocking`` False otherwise), or ``unknown`` (no
control and nothing self-proving). Records cut short at shutdown and records explained by
a network outage (``x_outage: true``) are no observation at all.

The :class:`Tracker` keeps one :class:`Entry` per (input, probe_asn). An observation that
differs from the confirmed state starts a candidate; ``confirm`` consecutive observations
that agree with it (same state; while the confirmed state is ``blocked``, a blocked
candidate must agree on its codes, since that is a change of mechanism) confirm it as a
:class:`Change`. An observation equal to the confirmed state drops the candidate, so one
blocked-looking sweep between OK ones raises nothing.

The rule for ``unknown``: it is never a state a change leads to, so it can never cause an
alarm (a helper outage turns hundreds of records unknown at once). It neither counts for
nor breaks a candidate: "blocked, unknown, blocked" confirms a block. ``unknown`` is only
what the metrics show for a target with no confirmed state yet, or whose last ``confirm``
observations were all unknown.

Changes: to ``blocked`` is ``blocked`` (``mechanism_changed`` from blocked with other codes);
to ``ok`` is ``unblocked`` from blocked, ``up`` from down; to ``down`` is ``down``. A target
seen for the first time raises ``blocked`` when confirmed blocked and nothing when
confirmed ok or down (a dead site in a list is no news at start).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kzprobe.verdict.outcome import is_interrupted

State = Literal["ok", "blocked", "down", "unknown"]
STATES: tuple[State, ...] = ("ok", "blocked", "down", "unknown")
KINDS = ("blocked", "unblocked", "mechanism_changed", "down", "up")
MAX_CODES = 32  # interference codes kept per state (a record has a handful)
MAX_EVIDENCE = 10  # deciding records named in an event (confirm may be up to 100)
MAX_TEXT = 2048  # an input, a uid, a time: longer strings are cut
DEFAULT_GROUP = "default"

Key = tuple[str, str]  # (input, probe_asn)


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Ref:
    """The record an observation came from: what evidence and ``at`` point to."""

    uid: str | None
    start_time: str | None
    sweep: str | None

    def as_evidence(self) -> dict[str, Any]:
        return {"measurement_uid": self.uid, "measurement_start_time": self.start_time,
                "sweep": self.sweep}


@dataclass(frozen=True, slots=True)
class Observation:
    """One record's state, with what an event about it needs."""

    input: str
    probe_asn: str
    state: State
    codes: tuple[str, ...]
    ref: Ref
    group: str = DEFAULT_GROUP
    probe_cc: str | None = None
    probe_id: str | None = None
    category_code: str | None = None
    sni_blocking_confirmed: Any = None
    blockpage: Any = None

    @property
    def key(self) -> Key:
        return (self.input, self.probe_asn)

    def agrees(self, other: Observation) -> bool:
        """Same state, and for blocked the same codes."""
        return self.state == other.state and (self.state != "blocked"
                                              or self.codes == other.codes)


def _codes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(sorted({str(code)[:64] for code in value}))[:MAX_CODES]


def _state(keys: Mapping[str, Any]) -> tuple[State, tuple[str, ...]]:
    codes = _codes(keys.get("interference"))
    blocking = keys.get("blocking")
    if codes or blocking not in (False, None):
        return "blocked", codes
    if blocking is False:
        return ("down" if keys.get("accessible") is False else "ok"), ()
    return "unknown", ()


def classify(record: Mapping[str, Any]) -> Observation | None:
    """The observation a record makes, or None (interrupted, an outage, no input)."""
    if record.get("x_outage") is True or is_interrupted(record):
        return None
    keys = record.get("test_keys")
    subject = _text(record.get("input"))
    if not isinstance(keys, Mapping) or not subject:
        return None
    state, codes = _state(keys)
    notes = record.get("annotations")
    notes = notes if isinstance(notes, Mapping) else {}
    ref = Ref(uid=_text(record.get("x_measurement_uid"), 64),
              start_time=_text(record.get("measurement_start_time"), 64),
              sweep=_text(notes.get("kzprobe_sweep"), 128))
    return Observation(
        input=subject, probe_asn=_text(record.get("probe_asn"), 32) or "AS0", state=state,
        codes=codes, ref=ref, group=_text(notes.get("kzprobe_group"), 128) or DEFAULT_GROUP,
        probe_cc=_text(record.get("probe_cc"), 8), probe_id=_text(notes.get("kzprobe_probe_id"),
                                                                    64),
        category_code=_text(record.get("category_code"), 16),
        sni_blocking_confirmed=_scalar(keys.get("sni_blocking_confirmed")),
        blockpage=_scalar(keys.get("blockpage")))


def _scalar(value: Any) -> Any:
    """A bool, a short string or None: what an event copies from a record's keys."""
    if isinstance(value, bool) or value is None:
        return value
    return _text(value, 256)


@dataclass(frozen=True, slots=True)
class Change:
    """A confirmed change of one target: an event without its number yet."""

    kind: str
    frm: Observation | None  # None: the target's first confirmed state
    to: Observation  # the deciding (last) observation
    at: str | None  # measurement_start_time of the first record in the new state
    evidence: tuple[Ref, ...]
    confirmed_at: float  # unix time


def kind_of(frm: Observation | None, to: Observation) -> str | None:
    """The event kind of a confirmed move (None: no event)."""
    before = frm.state if frm is not None else None
    if to.state == "blocked":
        return "mechanism_changed" if before == "blocked" else "blocked"
    if to.state == "ok":
        return {"blocked": "unblocked", "down": "up"}.get(before or "")
    if to.state == "down":
        return "down" if before is not None else None
    return None


@dataclass(slots=True)
class Entry:
    """One target's confirmed state, candidate and freshness (mutable, owned by the tracker)."""

    confirmed: Observation | None = None
    candidate: list[Observation] = field(default_factory=list)  # agreeing, oldest first
    unknown_streak: int = 0
    last_seen: float = 0.0
    group: str = DEFAULT_GROUP

    def shown_state(self, confirm: int) -> State:
        """What the metrics show: the confirmed state, unknown when none or gone stale."""
        if self.confirmed is None or self.unknown_streak >= confirm:
            return "unknown"
        return self.confirmed.state


class Tracker:
    """Confirmed states of all targets; :meth:`observe` returns the changes it confirms."""

    def __init__(self, confirm: int) -> None:
        self.confirm = max(1, confirm)
        self.entries: dict[Key, Entry] = {}
        # bumped by every change a restart would need (states, candidates, streaks, the
        # set of targets), not by a target merely seen again in the state it had: the
        # state file is rewritten when this moves (core.Alerts._flush)
        self.revision = 0

    def observe(self, obs: Observation, now: float) -> Change | None:
        entry = self.entries.get(obs.key)
        if entry is None:
            entry = self.entries[obs.key] = Entry()
            self.revision += 1
        if entry.group != obs.group:
            self.revision += 1
        entry.last_seen, entry.group = now, obs.group
        if obs.state == "unknown":
            entry.unknown_streak += 1
            self.revision += 1
            return None
        if entry.unknown_streak:
            self.revision += 1
        entry.unknown_streak = 0
        if entry.confirmed is not None and entry.confirmed.agrees(obs):
            if entry.candidate:
                self.revision += 1
            entry.confirmed = obs  # the same state, with the latest names and details
            entry.candidate.clear()
            return None
        self.revision += 1
        if entry.candidate and not _same_candidate(entry, entry.candidate[0], obs):
            entry.candidate.clear()
        entry.candidate.append(obs)
        if len(entry.candidate) < self.confirm:
            return None
        return self._confirm(entry, now)

    def _confirm(self, entry: Entry, now: float) -> Change | None:
        first, last = entry.candidate[0], entry.candidate[-1]
        frm, kind = entry.confirmed, kind_of(entry.confirmed, last)
        entry.confirmed = last
        if kind is None:
            entry.candidate = []
            return None
        deciding = [first, *entry_tail(entry.candidate)]
        entry.candidate = []
        return Change(kind=kind, frm=frm, to=last, at=first.ref.start_time,
                      evidence=tuple(obs.ref for obs in deciding), confirmed_at=now)

    def settle(self, key: Key, to: Observation) -> None:
        """Set a target's confirmed state (replaying an event written before a restart)."""
        entry = self.entries.setdefault(key, Entry(group=to.group))
        entry.confirmed, entry.candidate = to, []
        self.revision += 1

    def forget(self, older_than: float, keep: int) -> int:
        """Drop targets not seen since ``older_than``, then the least recently seen above
        ``keep``; return how many were dropped."""
        stale = [key for key, entry in self.entries.items() if entry.last_seen < older_than]
        for key in stale:
            del self.entries[key]
        excess = len(self.entries) - keep
        if excess > 0:
            oldest = sorted(self.entries, key=lambda k: self.entries[k].last_seen)[:excess]
            for key in oldest:
                del self.entries[key]
        dropped = len(stale) + max(0, excess)
        self.revision += dropped > 0
        return dropped

    def shown(self) -> Iterator[tuple[str, str, State]]:
        """(input, group, state) per target for the metrics: one per (input, group)."""
        seen: set[tuple[str, str]] = set()
        for (subject, _), entry in self.entries.items():
            if (subject, entry.group) not in seen:
                seen.add((subject, entry.group))
                yield subject, entry.group, entry.shown_state(self.confirm)


def _same_candidate(entry: Entry, first: Observation, obs: Observation) -> bool:
    """Does ``obs`` continue the candidate? The same state; the same codes too while the
    confirmed state is blocked (that candidate is a change of mechanism). A block whose
    codes vary from sweep to sweep is still a block."""
    if first.state != obs.state:
        return False
    blocked_now = entry.confirmed is not None and entry.confirmed.state == "blocked"
    return not (blocked_now and obs.state == "blocked") or first.codes == obs.codes


def entry_tail(candidate: list[Observation]) -> list[Observation]:
    """The deciding observations after the first, at most MAX_EVIDENCE - 1 (the latest)."""
    return candidate[1:][-(MAX_EVIDENCE - 1):]
