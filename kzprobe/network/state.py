"""The network state from anchor checks: pure functions and a small state machine, no I/O.

One *round* checks every anchor once (plus the control helper and, through the anchors' own
lookups, the resolvers). :func:`classify` names the state a round shows; the
:class:`NetworkStateMachine` confirms a change only after ``[network] confirm`` consecutive
rounds agree (``recover`` for the way back to online), so one lost packet never makes an
outage, and one lucky packet never ends one.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kzprobe.config.model import NetworkConfig

ONLINE = "online"
INTERNATIONAL_OUTAGE = "international_outage"
FULL_OUTAGE = "full_outage"
DNS_OUTAGE = "dns_outage"
CONTROL_UNREACHABLE = "control_unreachable"
DEGRADED = "degraded"
STATES = (ONLINE, INTERNATIONAL_OUTAGE, FULL_OUTAGE, DNS_OUTAGE, CONTROL_UNREACHABLE, DEGRADED)
# States that explain a record's failure (kzprobe.network.flag); a sweep runs at outage_rate.
OUTAGES = frozenset({INTERNATIONAL_OUTAGE, FULL_OUTAGE, DNS_OUTAGE})

# Event kinds (the event log's ``kind``), by the state a change leads to.
OUTAGE, RECOVERED, DEGRADED_KIND = "outage", "recovered", "degraded"

Scope = Literal["domestic", "international"]
CheckKind = Literal["anchor", "resolvers", "helper"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorCheck:
    """What one anchor did in one round."""

    anchor: str  # the target URI, "resolvers", or the helper's URL
    scope: Scope
    failure: str | None  # None: reached
    kind: CheckKind = "anchor"
    dns_failed: bool = False  # it failed at its own lookup: nothing learnt about the path
    seconds: float | None = None  # handshake + transfer time, when reached

    @property
    def ok(self) -> bool:
        return self.failure is None

    def evidence(self) -> dict[str, str | None]:
        """The event log's evidence entry."""
        return {"anchor": self.anchor, "scope": self.scope, "failure": self.failure}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRound:
    """Every anchor's check of one round, under one id (records name it: x_network_check)."""

    check_id: str
    at: float  # Unix time the round started
    checks: tuple[AnchorCheck, ...]
    ended: float | None = None  # Unix time its last check finished

    def of_kind(self, kind: CheckKind) -> list[AnchorCheck]:
        return [c for c in self.checks if c.kind == kind]


def _reached(checks: Iterable[AnchorCheck], scope: Scope) -> bool:
    return any(c.ok for c in checks if c.scope == scope)


def _all_down(checks: Sequence[AnchorCheck], scope: Scope) -> bool:
    """Every anchor of ``scope`` failed, and at least one on the path (not its lookup)."""
    mine = [c for c in checks if c.scope == scope]
    return bool(mine) and not any(c.ok for c in mine) and any(not c.dns_failed for c in mine)


def classify(checks: Sequence[AnchorCheck], slow: Sequence[str] = ()) -> str:
    """The state one round shows. ``slow``: anchors beyond their baseline (:class:`Baselines`).

    In order: nothing reached is ``full_outage``; domestic reached but every international
    anchor down on the path is ``international_outage`` (``control_unreachable`` when the
    helper is the only international anchor); resolvers that answer nothing while anchors
    work is ``dns_outage``; only the helper down is ``control_unreachable``; most anchors
    slow is ``degraded``.
    """
    if not any(c.ok for c in checks):
        return FULL_OUTAGE
    if _reached(checks, "domestic") and _all_down(checks, "international"):
        others = [c for c in checks if c.scope == "international" and c.kind != "helper"]
        return INTERNATIONAL_OUTAGE if others else CONTROL_UNREACHABLE
    if any(c.kind == "resolvers" and not c.ok for c in checks):
        return DNS_OUTAGE
    if any(c.kind == "helper" and not c.ok for c in checks):
        return CONTROL_UNREACHABLE
    return DEGRADED if slow else ONLINE


@dataclass(slots=True)
class Baselines:
    """Each anchor's own rolling baseline: the median of its last normal times."""

    samples: int = 20
    min_samples: int = 3
    factor: float = 3.0
    min_seconds: float = 0.5
    _times: dict[str, deque[float]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: NetworkConfig) -> Baselines:
        return cls(samples=config.baseline_samples, min_samples=config.baseline_min_samples,
                   factor=config.degraded_factor, min_seconds=config.degraded_min_seconds)

    def baseline(self, anchor: str) -> float | None:
        times = self._times.get(anchor)
        if times is None or len(times) < self.min_samples:
            return None
        return statistics.median(times)

    def slow(self, checks: Sequence[AnchorCheck]) -> list[str]:
        """Anchors beyond their baseline, when they are more than half of those that have
        one and were reached (network-wide slowness, not one slow server); else []."""
        judged, slow = 0, []
        for check in checks:
            base = self.baseline(check.anchor)
            if base is None or check.seconds is None or not check.ok:
                continue
            judged += 1
            if check.seconds > base * self.factor and check.seconds - base >= self.min_seconds:
                slow.append(check.anchor)
        return slow if judged and len(slow) * 2 > judged else []

    def learn(self, checks: Iterable[AnchorCheck]) -> None:
        """Add a normal round's times (only normal ones: throttling must not become normal)."""
        for check in checks:
            if check.ok and check.seconds is not None:
                times = self._times.setdefault(check.anchor, deque(maxlen=self.samples))
                times.append(check.seconds)


def event_kind(state: str) -> str:
    """The event kind of a change into ``state``."""
    if state == ONLINE:
        return RECOVERED
    return DEGRADED_KIND if state == DEGRADED else OUTAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A confirmed change of the network state."""

    from_state: str
    to_state: str
    at: float  # start of the first round that showed the new state
    confirmed_at: float  # end of the round that confirmed it
    check_id: str  # the confirming round
    evidence: tuple[AnchorCheck, ...]  # the confirming round's checks
    slow: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return event_kind(self.to_state)


class NetworkStateMachine:
    """Confirmed network state from rounds: hysteresis over :func:`classify`."""

    def __init__(self, config: NetworkConfig) -> None:
        self.confirm = config.confirm
        self.recover = config.recover
        self.baselines = Baselines.from_config(config)
        self.state = ONLINE
        self.check_id: str | None = None  # the latest round that agreed with ``state``
        self.since: float | None = None  # when ``state`` began (None: since start)
        self.candidate: str | None = None  # a change waiting for confirmation
        self.streak = 0
        self._first: CheckRound | None = None
        self.last_round: CheckRound | None = None
        self.last_raw: str | None = None

    def resume(self, state: str, since: float | None) -> bool:
        """Start from a state confirmed before a restart (the event log's last network
        event): an outage that goes on is not announced again, and its end is. False, and
        nothing changed, for a state this version does not know."""
        if state not in STATES:
            return False
        self.state, self.since = state, since
        self.candidate, self.streak, self._first = None, 0, None
        return True

    @property
    def pending(self) -> bool:
        """A change was seen and is not yet confirmed or rejected."""
        return self.candidate is not None

    @property
    def candidate_check(self) -> str | None:
        """The first round that showed the pending change."""
        return self._first.check_id if self._first is not None else None

    def observe(self, round_: CheckRound) -> Transition | None:
        """Take one round; return the transition it confirms, if any."""
        slow = self.baselines.slow(round_.checks)
        raw = classify(round_.checks, slow)
        if raw == ONLINE:
            self.baselines.learn(round_.checks)
        self.last_round, self.last_raw = round_, raw
        if raw == self.state:
            self.candidate, self.streak, self._first = None, 0, None
            self.check_id = round_.check_id
            return None
        if raw != self.candidate:
            self.candidate, self.streak, self._first = raw, 0, round_
        self.streak += 1
        if self.streak < (self.recover if raw == ONLINE else self.confirm):
            return None
        first = self._first or round_
        change = Transition(from_state=self.state, to_state=raw, at=first.at,
                            confirmed_at=round_.ended or round_.at, check_id=round_.check_id,
                            evidence=round_.checks, slow=tuple(slow))
        self.state, self.check_id, self.since = raw, round_.check_id, first.at
        self.candidate, self.streak, self._first = None, 0, None
        return change
