"""The daily budget as pure functions, and a simulated day under it (compressed time)."""

from __future__ import annotations

import random

import pytest

from kzprobe.config import ConfigError, parse_config
from kzprobe.ops.budget import (
    DAY,
    DailyUse,
    GroupUse,
    default_interval,
    recent_sweep_bytes,
    seconds_to_midnight,
)

MIDNIGHT = 1_796_601_600.0  # 2026-12-08 00:00 UTC
GB = 1_000_000_000


def _groups(default_bytes: float | None, watch_bytes: float | None = 1e6) -> list[GroupUse]:
    return [GroupUse(name="default", interval=3600.0, sweep_bytes=default_bytes),
            GroupUse(name="watch", interval=60.0, sweep_bytes=watch_bytes)]


def test_off_or_within_budget_keeps_the_configured_interval() -> None:
    """No budget, no sweep measured yet, or a projection that fits: nothing changes."""
    for daily, sweep in ((None, 5e9), (10 * GB, None), (10 * GB, 100e6)):
        plan = default_interval(daily_bytes=daily, used_today=0, now=MIDNIGHT,
                                groups=_groups(sweep))
        assert (plan.interval, plan.stretched) == (3600.0, False), plan
    assert "within budget" in plan.reason


def test_over_budget_stretches_the_default_group_only() -> None:
    """24 sweeps of 500 MB + 1440 watch sweeps of 1 MB in a 5 GB day: the watch group's
    1.44 GB is reserved, the default group gets 3.56 GB, about 7 sweeps, ~3.4 h apart."""
    plan = default_interval(daily_bytes=5 * GB, used_today=0, now=MIDNIGHT,
                            groups=_groups(500e6))
    assert plan.stretched
    assert plan.interval == pytest.approx(DAY * 500e6 / (5 * GB - 1.44 * GB))
    assert plan.projected_bytes == pytest.approx(5 * GB, rel=1e-6)
    assert "default interval 3600 s ->" in plan.reason and "watch groups need 1.4 GB" in plan.reason


def test_spent_budget_waits_for_utc_midnight() -> None:
    """Less room than one sweep: the next default sweep is after the reset."""
    now = MIDNIGHT + 20 * 3600
    plan = default_interval(daily_bytes=5 * GB, used_today=int(4.9 * GB), now=now,
                            groups=_groups(500e6))
    assert plan.stretched and plan.interval == pytest.approx(4 * 3600)
    assert "waits for 00:00 UTC" in plan.reason


def test_never_shorter_than_configured() -> None:
    """Late in the day a tiny remainder never speeds sweeps up."""
    plan = default_interval(daily_bytes=5 * GB, used_today=int(4 * GB), now=MIDNIGHT + 86000,
                            groups=_groups(100e6, 0))
    assert plan.interval >= 3600.0


def test_helpers() -> None:
    """Midnight arithmetic, the conservative recent size, and the daily counter's reset."""
    assert seconds_to_midnight(MIDNIGHT + 1) == DAY - 1
    assert recent_sweep_bytes([]) is None
    assert recent_sweep_bytes([9, 1, 2, 3]) == 3.0
    use = DailyUse()
    use.add(100, now=MIDNIGHT - 1)
    assert use.today(MIDNIGHT - 0.5) == 100
    use.add(5, now=MIDNIGHT + 1)
    assert use.today(MIDNIGHT + 2) == 5


def _simulate_day(daily: int, seed: int) -> tuple[int, int]:
    """One UTC day of a scheduler obeying the plan: watch sweeps every 60 s, default sweeps
    of 400-600 MB at the planned interval. Returns (bytes used, default sweeps)."""
    rng = random.Random(seed)
    use, history = DailyUse(), [int(500e6)]
    now, next_default, sweeps = MIDNIGHT, MIDNIGHT, 0
    while now < MIDNIGHT + DAY:
        use.add(int(rng.uniform(0.8e6, 1.2e6)), now=now)  # the watch group, every minute
        if now >= next_default:  # a default sweep, then the plan for the next one
            size = int(rng.uniform(400e6, 600e6))
            use.add(size, now=now)
            history.append(size)
            sweeps += 1
            plan = default_interval(
                daily_bytes=daily, used_today=use.today(now), now=now,
                groups=[GroupUse(name="default", interval=3600.0,
                                 sweep_bytes=recent_sweep_bytes(history)),
                        GroupUse(name="watch", interval=60.0, sweep_bytes=1.2e6)])
            next_default = now + plan.interval
        now += 60.0
    return use.today(MIDNIGHT + DAY - 1), sweeps


@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_day_stays_within_5_percent_of_the_budget(seed: int) -> None:
    """Compressed time: the day's use ends within 5 % of daily_bytes and uses most of it."""
    used, sweeps = _simulate_day(5 * GB, seed)
    assert used <= 5 * GB * 1.05
    assert used >= 5 * GB * 0.8
    assert 5 <= sweeps < 24


def test_config_validates_daily_bytes() -> None:
    """An integer of bytes, 0 = off; anything else is a one-line ConfigError."""
    assert parse_config({"limits": {"daily_bytes": 0}}).config.limits.daily_bytes is None
    assert parse_config({"limits": {"daily_bytes": GB}}).config.limits.daily_bytes == GB
    for bad in (-1, 1.5, "5GB"):
        with pytest.raises(ConfigError, match=r"\[limits\] daily_bytes"):
            parse_config({"limits": {"daily_bytes": bad}})
