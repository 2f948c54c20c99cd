"""The daily budget as pure functions, and a simulated day under it (compressed time)."""

from __future__ import annotations

import random

import pytest

from kzprobe.config import ConfigError, parse_config
from kzprobe.ops.budget import (
    DAY,
    TARGET_OVERHEAD,
    DailyUse,
    GroupUse,
    Plan,
    group_cap,
    next_default_sweep,
    recent_sweep_bytes,
    seconds_to_midnight,
)

MIDNIGHT = 1_796_601_600.0  # 2026-12-08 00:00 UTC
HOUR = 3600.0
GB = 1_000_000_000
CAP = 700e6  # the default group's cap: 1,300 targets x (512 KB + overhead)


def _groups(default_bytes: float | None, watch_bytes: float | None = 1e6) -> list[GroupUse]:
    return [GroupUse(name="default", interval=HOUR, sweep_bytes=default_bytes, cap_bytes=CAP),
            GroupUse(name="watch", interval=60.0, sweep_bytes=watch_bytes, cap_bytes=2e6)]


def _plan(*, used: float = 0, now: float = MIDNIGHT, last: float | None = MIDNIGHT,
          default_bytes: float | None = 500e6, watch_bytes: float | None = 1e6,
          daily: int | None = 5 * GB) -> Plan:
    return next_default_sweep(daily_bytes=daily, used_today=int(used), now=now, last_start=last,
                              groups=_groups(default_bytes, watch_bytes))


def test_off_or_within_budget_keeps_the_configured_interval() -> None:
    """No budget, or every sweep at the configured pace fits: an interval after the last."""
    for daily, sweep in ((None, 5e9), (10 * GB, 100e6)):
        plan = _plan(daily=daily, default_bytes=sweep)
        assert (plan.not_before, plan.stretched) == (MIDNIGHT + HOUR, False), plan
    assert plan.state == "within" and "within budget" in plan.reason


def test_over_budget_spaces_the_default_group_only() -> None:
    """Sweeps of 500 MB and a watch group of 1 MB a minute in a 5 GB day, just after the
    first sweep: the watch group's 1.44 GB is reserved, the 3.06 GB left holds 6 more
    sweeps, spread evenly over the day with the first of tomorrow's: one every 24/7 h."""
    plan = _plan(used=500e6 + 1e6)
    assert plan.stretched and plan.state == "stretched"
    assert plan.not_before == pytest.approx(MIDNIGHT + DAY / 7)
    assert plan.projected_bytes <= 5 * GB
    assert "default interval 3600 s -> 12343 s" in plan.reason, plan.reason
    assert "watch groups need 1.4 GB" in plan.reason
    assert "room for 6 more sweeps today" in plan.reason


def test_spent_budget_waits_for_utc_midnight() -> None:
    """Less room than one sweep: the next default sweep is after the reset."""
    plan = _plan(used=4.4 * GB, now=MIDNIGHT + 20 * HOUR, last=MIDNIGHT + 19 * HOUR)
    assert plan.state == "spent" and plan.not_before == pytest.approx(MIDNIGHT + DAY)
    assert "waits for 00:00 UTC" in plan.reason and "500.0 MB per sweep" in plan.reason


def test_end_of_day_last_sweep_only_if_it_fits() -> None:
    """Late in the day: room for one more sweep (and the watch group) spaces it halfway to
    midnight; a little less room and it waits for the reset instead of overshooting."""
    late = MIDNIGHT + 21 * HOUR
    plan = _plan(used=5 * GB - _reserve(late) - 500e6, now=late, last=late)
    assert plan.state == "stretched" and plan.not_before == pytest.approx(late + 1.5 * HOUR)
    assert "room for 1 more sweep today" in plan.reason
    due = plan.not_before  # a watch sweep came out larger than planned: 1 MB less room
    plan = _plan(used=5 * GB - _reserve(due) - 499e6, now=due, last=late)
    assert plan.state == "spent" and plan.not_before == pytest.approx(MIDNIGHT + DAY)


def _reserve(now: float) -> float:
    """The watch group's 1 MB a minute until midnight, and one in flight."""
    return 1e6 * (seconds_to_midnight(now) / 60 + 1)


def test_first_sweep_is_costed_at_its_cap() -> None:
    """Before any default sweep is measured it may cost up to its cap: it starts at once
    when that fits, else at 00:00 UTC, and says why (at noon with 3.8 GB used, 479 MB are
    left: a measured 500 MB sweep would not fit either, one of 400 MB would)."""
    plan = _plan(last=None, default_bytes=None, now=MIDNIGHT + HOUR, used=1e9)
    assert plan.state == "within" and plan.not_before == MIDNIGHT + HOUR
    plan = _plan(last=None, default_bytes=None, now=MIDNIGHT + 12 * HOUR, used=3.8 * GB)
    assert plan.state == "spent" and plan.not_before == pytest.approx(MIDNIGHT + DAY)
    assert "700.0 MB for a first sweep at most" in plan.reason, plan.reason
    plan = _plan(last=None, default_bytes=400e6, now=MIDNIGHT + 12 * HOUR, used=3.8 * GB)
    assert plan.state == "within"


def test_a_cap_over_a_whole_days_share_is_costed_at_that_share() -> None:
    """A cap of 4 GB where a whole day leaves the default group 3.56 GB: waiting for room
    for it would starve the group for ever, so its first sweep runs while all of that share
    is left (the watch group on plan), and waits for 00:00 UTC once any is spent."""
    groups = [GroupUse(name="default", interval=HOUR, sweep_bytes=None, cap_bytes=4e9),
              GroupUse(name="watch", interval=60.0, sweep_bytes=1e6)]
    plan = next_default_sweep(daily_bytes=5 * GB, used_today=int(60e6), now=MIDNIGHT + HOUR,
                              last_start=None, groups=groups)
    assert plan.state == "within" and plan.not_before == MIDNIGHT + HOUR
    plan = next_default_sweep(daily_bytes=5 * GB, used_today=int(62e6), now=MIDNIGHT + HOUR,
                              last_start=None, groups=groups)
    assert plan.state == "spent" and plan.not_before == pytest.approx(MIDNIGHT + DAY)
    assert "up to 4.0 GB (body caps), costed at its share of a whole day, 3.6 GB" in plan.reason


def test_an_unmeasured_watch_group_is_sized_first() -> None:
    """Its share of the day is unknown until its first sweep (seconds): the default group
    waits for it, without calling that a stretch."""
    plan = _plan(last=None, default_bytes=None, watch_bytes=None)
    assert plan.state == "sizing" and not plan.stretched and "watch" in plan.reason
    assert plan.not_before > MIDNIGHT


def test_never_shorter_than_configured() -> None:
    """Late in the day a tiny remainder never speeds sweeps up."""
    plan = _plan(used=4 * GB, now=MIDNIGHT + 86000, last=MIDNIGHT + 85000, default_bytes=100e6,
                 watch_bytes=0)
    assert plan.not_before >= MIDNIGHT + 85000 + HOUR


@pytest.mark.parametrize("seed", range(3))
def test_a_sweep_allowed_now_always_fits(seed: int) -> None:
    """Whenever the plan lets a default sweep start now, today's use, the watch group's
    reserve and the sweep's cost (before it is measured: its cap, at most a whole day's
    share of 3.56 GB) fit the budget."""
    rng = random.Random(seed)
    allowed = 0
    for _ in range(2000):
        now = MIDNIGHT + rng.uniform(0, DAY)
        last = rng.choice([None, now - rng.uniform(0, 6 * HOUR)])
        sweep = rng.choice([None, rng.uniform(1e6, 2 * GB)])
        cap = rng.choice([CAP, 4e9])
        used = rng.uniform(0, 6 * GB)
        plan = next_default_sweep(
            daily_bytes=5 * GB, used_today=int(used), now=now, last_start=last,
            groups=[GroupUse(name="default", interval=HOUR, sweep_bytes=sweep, cap_bytes=cap),
                    GroupUse(name="watch", interval=60.0, sweep_bytes=1e6)])
        if plan.not_before <= now:
            allowed += 1
            cost = min(cap, 5 * GB - 1e6 * (DAY / 60 + 2)) if sweep is None else sweep
            assert int(used) + _reserve(now) + cost <= 5 * GB
    assert allowed > 50


def test_helpers() -> None:
    """Midnight arithmetic, the conservative recent size and cap, the daily counter's reset."""
    assert seconds_to_midnight(MIDNIGHT + 1) == DAY - 1
    assert recent_sweep_bytes([]) is None
    assert recent_sweep_bytes([9, 1, 2, 3]) == 3.0
    assert group_cap([1000, 2000]) == 3000 + 2 * TARGET_OVERHEAD
    use = DailyUse()
    use.add(100, now=MIDNIGHT - 1)
    assert use.today(MIDNIGHT - 0.5) == 100
    use.add(5, now=MIDNIGHT + 1)
    assert use.today(MIDNIGHT + 2) == 5


def _simulate_day(daily: int, seed: int) -> tuple[float, int]:
    """One UTC day of a scheduler obeying the plan from 00:00, as the daemon does: watch
    sweeps of ~1 MB every 60 s, default sweeps of 400-600 MB lasting 20 min, the first one
    before any is measured; bytes counted when a sweep ends, the plan consulted each minute
    while no default sweep runs. Returns (bytes of the sweeps started that day, default
    sweeps started)."""
    rng = random.Random(seed)
    use, history, watch = DailyUse(), list[int](), list[int]()
    started: dict[int, float] = {0: 0.0}  # day -> bytes of sweeps started that day
    now, last, ends, sweeps = MIDNIGHT, None, None, 0
    while now < MIDNIGHT + DAY:
        size = int(rng.uniform(0.8e6, 1.2e6))  # the watch group, every minute
        use.add(size, now=now)
        watch.append(size)
        started[0] += size
        if ends is not None and now >= ends[0]:
            use.add(ends[1], now=now)
            history.append(ends[1])
            ends = None
        if ends is None:
            plan = next_default_sweep(
                daily_bytes=daily, used_today=use.today(now), now=now, last_start=last,
                groups=[GroupUse(name="default", interval=HOUR, cap_bytes=CAP,
                                 sweep_bytes=recent_sweep_bytes(history)),
                        GroupUse(name="watch", interval=60.0,
                                 sweep_bytes=recent_sweep_bytes(watch))])
            if plan.not_before <= now:
                size = int(rng.uniform(400e6, 600e6))
                started[0] += size
                last, ends, sweeps = now, (now + 1200, size), sweeps + 1
        now += 60.0
    return started[0], sweeps


@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_day_stays_within_the_budget(seed: int) -> None:
    """Compressed time: the day's sweeps stay within daily_bytes and use most of it."""
    used, sweeps = _simulate_day(5 * GB, seed)
    assert used <= 5 * GB
    assert used >= 5 * GB * 0.85
    assert 5 <= sweeps < 24


def test_config_validates_daily_bytes() -> None:
    """An integer of bytes, 0 = off; anything else is a one-line ConfigError."""
    assert parse_config({"limits": {"daily_bytes": 0}}).config.limits.daily_bytes is None
    assert parse_config({"limits": {"daily_bytes": GB}}).config.limits.daily_bytes == GB
    for bad in (-1, 1.5, "5GB"):
        with pytest.raises(ConfigError, match=r"\[limits\] daily_bytes"):
            parse_config({"limits": {"daily_bytes": bad}})
