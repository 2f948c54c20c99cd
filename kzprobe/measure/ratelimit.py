"""Limits: a token bucket for measurements started per second, a per-IP gate, and a
priority gate that lets a watchlist's sweep go ahead of a long default sweep.

The bucket is what keeps a monitor polite and its traffic pattern steady; the per-host
gate keeps thousands of test-list URLs hosted behind one CDN address from hammering it.
Both use the loop's monotonic clock and hold no reference to a loop between calls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable


class TokenBucket:
    """Refills ``rate`` tokens per second up to ``capacity``; ``acquire`` waits for one."""

    def __init__(
        self, rate: float, capacity: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.waits = 0  # times a caller had to wait (exported as a metric)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        """Take a token if one is available now; never waits (for servers answering 429)."""
        self._refill()
        if self._tokens < 1:
            self.waits += 1
            return False
        self._tokens -= 1
        return True

    async def acquire(self) -> None:
        """Take one token, sleeping until one is available (FIFO via the lock)."""
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                self.waits += 1
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


class PriorityGate:
    """At most ``capacity`` holders; waiters are admitted lowest ``priority`` first, in
    arrival order within one priority. The groups of targets share one worker pool and one
    rate limit through two of these: a watchlist sweep (priority = its shorter interval)
    takes the next free slot and the next token before the queued rest of a long sweep."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._free = capacity
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted as we were cancelled: hand the slot on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():  # a cancelled waiter is skipped here, lazily
                future.set_result(None)
                return
        self._free += 1

    def hold(self, priority: float) -> _Held:
        """``async with gate.hold(priority):`` one slot for the block."""
        return _Held(self, priority)


class _Held:
    __slots__ = ("_gate", "_priority")

    def __init__(self, gate: PriorityGate, priority: float) -> None:
        self._gate, self._priority = gate, priority

    async def __aenter__(self) -> None:
        await self._gate.acquire(self._priority)

    async def __aexit__(self, *exc_info: object) -> None:
        self._gate.release()


class HostLimiter:
    """At most ``per_host`` concurrent connections to one destination IP."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def slot(self, ip: str) -> _Slot:
        """``async with limiter.slot(ip):`` holds one of the IP's ``per_host`` slots."""
        return _Slot(self, ip)

    def _enter(self, ip: str) -> asyncio.Semaphore:
        entry = self._gates.get(ip)
        gate, users = entry if entry is not None else (asyncio.Semaphore(self.per_host), 0)
        self._gates[ip] = (gate, users + 1)
        return gate

    def _leave(self, ip: str) -> None:
        gate, users = self._gates[ip]
        if users <= 1:
            del self._gates[ip]  # bounded: only IPs in use are remembered
        else:
            self._gates[ip] = (gate, users - 1)

    def __len__(self) -> int:
        return len(self._gates)


class _Slot:
    """One use of a :class:`HostLimiter` gate (a class, not a generator: two per measurement)."""

    __slots__ = ("_gate", "_ip", "_limiter")

    def __init__(self, limiter: HostLimiter, ip: str) -> None:
        self._limiter, self._ip = limiter, ip
        self._gate: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        gate = self._limiter._enter(self._ip)
        try:
            await gate.acquire()
        except BaseException:
            self._limiter._leave(self._ip)
            raise
        self._gate = gate

    async def __aexit__(self, *exc_info: object) -> None:
        if self._gate is not None:
            self._gate.release()
        self._limiter._leave(self._ip)
