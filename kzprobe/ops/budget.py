"""The daily bandwidth budget (``[limits] daily_bytes``): when the default group may sweep next.

Pure functions, no clock and no I/O: the scheduler passes the time, today's bytes, when the
default group's last sweep started and each group's recent bytes per sweep. Only the default
group (``[targets] urls/files``) is ever slowed; watch groups keep their intervals, and their
projected use until 00:00 UTC (plus one sweep each, in flight) is reserved first.

A default sweep starts only if its cost fits in what that reserve leaves of today's budget.
Its cost is the largest of its last few sweeps; before one is measured, its cap: targets x
(body cap + :data:`TARGET_OVERHEAD`), so the first sweep cannot overshoot either (nor is it
sized before the watch groups' first sweeps are); a cap larger than a whole day's share
is costed at that share. The ``k`` sweeps that fit are spread evenly between the last one
and the first of tomorrow (00:00 UTC at the earliest). The plan charges a sweep whole to
the day it starts in, :class:`DailyUse` counts it in the day it ends in: a sweep across
midnight errs on the safe side in both days.

How the scheduler calls it, whenever it looks at the default group (a few groups: cheap)::

    use = DailyUse()                               # kept by the scheduler
    use.add(summary.bytes_sent + summary.bytes_received, now=time.time())  # per sweep
    history[group].append(summary_bytes)           # per group, last few sweeps
    plan = next_default_sweep(
        daily_bytes=config.limits.daily_bytes, used_today=use.today(time.time()),
        now=time.time(), last_start=<Unix time of the default group's last start, or None>,
        groups=[GroupUse(name=g.name, interval=g.interval, cap_bytes=group_cap(...),
                         sweep_bytes=recent_sweep_bytes(history[g.name])) for g in groups])
    # the default group sweeps at plan.not_before at the earliest (and not before its own
    # interval with jitter); when plan.stretched, log plan.reason and show it in /healthz.

``DailyUse`` starts at zero: after a restart the scheduler may seed it with the day's
records' ``x_bytes`` (or accept up to one day's over-use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DAY = 86400.0
DEFAULT_GROUP = "default"
RECENT_SWEEPS = 3  # the largest of the last few sweeps: one small sweep must not loosen the plan
# A measurement's bytes besides its body snapshot: DNS, TCP, a TLS handshake with its
# certificate chain, request and response headers (a blocked-looking target's retries and
# redirects can move more: the cap is an estimate for the first sweep only).
TARGET_OVERHEAD = 16 * 1024

State = Literal["off", "within", "sizing", "stretched", "spent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupUse:
    """One sweep group as the budget sees it."""

    name: str
    interval: float  # configured seconds between sweep starts
    sweep_bytes: float | None  # recent bytes (sent + received) per sweep; None: none yet
    cap_bytes: float = 0.0  # a sweep's bytes at most (group_cap): the cost before one is measured


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """When the default group may sweep next, and why."""

    not_before: float  # Unix time of the next default sweep at the earliest
    state: State  # off / within: its interval; sizing: until the watch groups have swept
    reason: str  # one line for the log and /healthz details
    projected_bytes: int  # today's use (UTC) projected with the sweeps planned

    @property
    def stretched(self) -> bool:
        """The budget, not the configured interval, holds the default group back."""
        return self.state in ("stretched", "spent")


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` (Unix time) until the next 00:00 UTC, when the budget resets."""
    return DAY - now % DAY


def recent_sweep_bytes(history: Sequence[int]) -> float | None:
    """A group's bytes per sweep for planning: the largest of its last few, None if none."""
    recent = list(history)[-RECENT_SWEEPS:]
    return float(max(recent)) if recent else None


def group_cap(body_caps: Sequence[int]) -> float:
    """A sweep's bytes at most, from its targets' body snapshot caps (one per target)."""
    return float(sum(cap + TARGET_OVERHEAD for cap in body_caps))


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _reserve(group: GroupUse, left: float) -> float:
    """A watch group's bytes until midnight, counting the sweep that may be in flight."""
    return (group.sweep_bytes or 0.0) * (left / group.interval + 1)


def _cost(base: GroupUse, watch: Sequence[GroupUse], daily_bytes: int) -> tuple[float, str]:
    """A default sweep's cost for the plan, and its words: the largest recent one, or before
    one is measured, its cap. A cap over the group's share of a whole day could never fit:
    it is costed at that share instead (the sweep runs while none of it is spent today,
    not never), and the sweep's measured size plans from then on."""
    if base.sweep_bytes is not None:
        return base.sweep_bytes, f"{_size(base.sweep_bytes)} per sweep"
    day = daily_bytes - sum(_reserve(g, DAY) + (g.sweep_bytes or 0.0) for g in watch)
    if base.cap_bytes <= day or day <= 0:
        return base.cap_bytes, f"{_size(base.cap_bytes)} for a first sweep at most (body caps)"
    return day, (f"a first sweep of up to {_size(base.cap_bytes)} (body caps), costed at "
                 f"its share of a whole day, {_size(day)}")


def next_default_sweep(*, daily_bytes: int | None, used_today: int, now: float,
                       last_start: float | None, groups: Sequence[GroupUse],
                       default: str = DEFAULT_GROUP) -> Plan:
    """The default group's next sweep under ``daily_bytes``: after its configured interval
    while every sweep at that pace fits today's budget, else spaced so that the sweeps that
    still fit (each at its cost) end today's plan at or under the budget; none fits: 00:00 UTC."""
    base = next((g for g in groups if g.name == default), None)
    earliest = now if last_start is None else last_start + (base.interval if base else 0.0)
    if base is None or daily_bytes is None:
        why = "no default group" if base is None else "daily_bytes off"
        return Plan(not_before=earliest, state="off", reason=why, projected_bytes=used_today)
    left = seconds_to_midnight(now)
    watch = [g for g in groups if g.name != default]
    unsized = [g.name for g in watch if g.sweep_bytes is None]
    if unsized:  # their share of the day is unknown: wait for their first sweeps (seconds)
        return Plan(not_before=now + left, state="sizing", projected_bytes=used_today,
                    reason=f"waiting for the first sweep of {', '.join(unsized)}")
    reserve = sum(_reserve(g, left) for g in watch)
    cost, each = _cost(base, watch, daily_bytes)
    room = daily_bytes - used_today - reserve
    fit = max(0, math.floor(room / cost)) if cost > 0 else math.inf
    used = f"{_size(used_today)} used of {_size(daily_bytes)}"
    need = f"watch groups need {_size(reserve)} in the {left / 3600:.1f} h left today (UTC)"
    if fit < 1:
        return Plan(not_before=now + left, state="spent", projected_bytes=int(used_today + reserve),
                    reason=f"daily budget reached: {used}, {need}, {each}; the {base.name} "
                           "group waits for 00:00 UTC")
    projected = int(used_today + reserve + min(fit, left / base.interval + 1) * cost)
    start = now if last_start is None else last_start
    spaced = start if last_start is None else start + (now + left - start) / (fit + 1)
    if spaced <= earliest:
        return Plan(not_before=earliest, state="within", projected_bytes=projected,
                    reason=f"within budget: {used}, {each}, {need}")
    interval = spaced - start
    return Plan(not_before=spaced, state="stretched", projected_bytes=projected,
                reason=f"{base.name} interval {base.interval:.0f} s -> {interval:.0f} s: {used}, "
                       f"{each}, {need}: room for {fit} more sweep{'s' * (fit != 1)} today")


class DailyUse:
    """Bytes used since 00:00 UTC; resets itself when the day changes."""

    def __init__(self) -> None:
        self._day = -1
        self._bytes = 0

    def add(self, nbytes: int, *, now: float) -> None:
        self.today(now)
        self._bytes += max(0, nbytes)

    def today(self, now: float) -> int:
        day = int(now // DAY)
        if day != self._day:
            self._day, self._bytes = day, 0
        return self._bytes
