"""The daily bandwidth budget (``[limits] daily_bytes``): how far to stretch the default sweep.

Pure functions, no clock and no I/O: the scheduler passes the time, today's bytes and each
group's recent bytes per sweep. Only the default group (``[targets] urls/files``) is ever
slowed; watch groups keep their intervals, and their projected use is reserved first.

How the scheduler calls it, before sleeping until the default group's next sweep::

    use = DailyUse()                               # kept by the scheduler
    use.add(summary.bytes_sent + summary.bytes_received, now=time.time())  # per sweep
    history[group].append(summary_bytes)           # per group, last few sweeps
    plan = default_interval(
        daily_bytes=config.limits.daily_bytes, used_today=use.today(time.time()),
        now=time.time(),
        groups=[GroupUse(name=g.name, interval=g.interval,
                         sweep_bytes=recent_sweep_bytes(history[g.name])) for g in groups])
    # sleep plan.interval (plus jitter) before the next default sweep; when plan.stretched,
    # log plan.reason and show it in /healthz details.

``DailyUse`` starts at zero: after a restart the scheduler may seed it with the day's
records' ``x_bytes`` (or accept up to one day's over-use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY = 86400.0
DEFAULT_GROUP = "default"
RECENT_SWEEPS = 3  # the largest of the last few sweeps: one small sweep must not loosen the plan


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupUse:
    """One sweep group as the budget sees it."""

    name: str
    interval: float  # configured seconds between sweep starts
    sweep_bytes: float | None  # recent bytes (sent + received) per sweep; None: none yet


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """When the default group sweeps next, and why."""

    interval: float  # seconds from this sweep's start to the next (>= the configured one)
    stretched: bool
    reason: str  # one line for the log and /healthz details
    projected_bytes: int  # today's use (UTC) projected at the planned intervals


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` (Unix time) until the next 00:00 UTC, when the budget resets."""
    return DAY - now % DAY


def recent_sweep_bytes(history: Sequence[int]) -> float | None:
    """A group's bytes per sweep for planning: the largest of its last few, None if none."""
    recent = list(history)[-RECENT_SWEEPS:]
    return float(max(recent)) if recent else None


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _projection(group: GroupUse, interval: float, left: float) -> float:
    return (group.sweep_bytes or 0.0) * left / interval


def default_interval(*, daily_bytes: int | None, used_today: int, now: float,
                     groups: Sequence[GroupUse], default: str = DEFAULT_GROUP) -> Plan:
    """The default group's interval under ``daily_bytes``: its configured interval while the
    projected use of every group until 00:00 UTC fits, else just long enough that the
    default group's sweeps fit in what the watch groups leave of the budget."""
    base = next((g for g in groups if g.name == default), None)
    if base is None:
        return Plan(interval=0.0, stretched=False, reason="no default group", projected_bytes=0)
    left = seconds_to_midnight(now)
    watch = sum(_projection(g, g.interval, left) for g in groups if g.name != default)
    planned = used_today + watch + _projection(base, base.interval, left)
    if daily_bytes is None:
        return Plan(interval=base.interval, stretched=False, reason="daily_bytes off",
                    projected_bytes=int(planned))
    if base.sweep_bytes is None or planned <= daily_bytes:
        why = ("no sweep measured yet" if base.sweep_bytes is None else
               f"{_size(planned)} of {_size(daily_bytes)} projected for today (UTC)")
        return Plan(interval=base.interval, stretched=False, reason=f"within budget: {why}",
                    projected_bytes=int(planned))
    return _stretch(base, daily_bytes, used_today, watch, left)


def _stretch(base: GroupUse, daily_bytes: int, used: int, watch: float, left: float) -> Plan:
    room = daily_bytes - used - watch
    sweep = base.sweep_bytes or 1.0
    if room < sweep:  # not even one more sweep fits today: wait for the reset
        interval = max(base.interval, left)
        reason = (f"daily budget reached: {_size(used)} used of {_size(daily_bytes)}, watch "
                  f"groups need {_size(watch)}; the {base.name} group waits for 00:00 UTC")
        return Plan(interval=interval, stretched=True, reason=reason,
                    projected_bytes=int(used + watch))
    interval = max(base.interval, left * sweep / room)
    reason = (f"{base.name} interval {base.interval:.0f} s -> {interval:.0f} s: "
              f"{_size(used)} used of {_size(daily_bytes)}, {_size(sweep)} per sweep, "
              f"watch groups need {_size(watch)} in the {left / 3600:.1f} h left today (UTC)")
    return Plan(interval=interval, stretched=True, reason=reason,
                projected_bytes=int(used + watch + sweep * left / interval))


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
