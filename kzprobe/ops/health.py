"""Is the daemon healthy? Event-loop liveness and the three conditions ``/healthz`` checks.

:class:`LoopWatch` runs on the event loop and stamps the time of each beat; everything
else here is read from the metrics thread, so a stuck loop is still *reported* (the
thread answers 503) rather than merely silent. Plain attribute reads under the GIL are
all the thread does: no asyncio object is touched from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


class LoopWatch:
    """Measures event-loop lag: how late a short sleep wakes up."""

    def __init__(self, interval: float = 0.25, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.interval = interval
        self._clock = clock
        self.last_beat = clock()
        self.lag = 0.0  # seconds the latest sleep overran
        self.max_lag = 0.0  # worst overrun since start (a blocked loop leaves its mark here)

    async def run(self) -> None:
        """Beat until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.beat(loop.time() - before - self.interval)

    def beat(self, lag: float) -> None:
        self.lag = max(0.0, lag)
        self.max_lag = max(self.max_lag, self.lag)
        self.last_beat = self._clock()

    def current_lag(self) -> float:
        """The lag now: grows while the loop is blocked, though no beat can record it."""
        overdue = self._clock() - self.last_beat - self.interval
        return max(self.lag, overdue, 0.0)


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """A reading of what health depends on, taken by the daemon's ``health_inputs``."""

    loop_lag: float
    writer_blocked: bool
    writer_error: str | None
    seconds_since_sweep: float  # since the last finished sweep, or since start if none
    sweep_interval: float


def problems(reading: HealthInputs, *, stuck_after: float) -> list[str]:
    """Why the daemon is unhealthy (empty when healthy), one short sentence each."""
    found = []
    if reading.loop_lag > stuck_after:
        found.append(f"event loop stuck for {reading.loop_lag:.1f} s")
    if reading.writer_blocked:
        found.append(f"writer cannot write ({reading.writer_error or 'unknown error'}); "
                     "probing paused")
    if reading.seconds_since_sweep > 2 * reading.sweep_interval:
        found.append(f"no sweep finished in {reading.seconds_since_sweep:.0f} s "
                     f"(2 intervals = {2 * reading.sweep_interval:.0f} s)")
    return found
