"""The measurement clock: a leaf, so the steps that stamp times need not import the context."""

from __future__ import annotations

import time


class Stopwatch:
    """Seconds since the measurement started (OONI's ``t0``/``t``)."""

    __slots__ = ("_start",)

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self._start, 6)
