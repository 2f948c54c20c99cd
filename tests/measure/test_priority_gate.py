"""The priority gate the groups share: a watchlist is admitted before a long sweep's queue."""

from __future__ import annotations

import asyncio

import pytest

from kzprobe.measure.ratelimit import PriorityGate


async def test_lower_priority_value_is_admitted_first_fifo_within_one() -> None:
    gate = PriorityGate(1)
    await gate.acquire(3600)  # a default sweep holds the only slot
    order: list[str] = []

    async def wait(name: str, priority: float) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    tasks = [asyncio.create_task(wait(name, prio)) for name, prio in
             (("default-1", 3600), ("default-2", 3600), ("watch-1", 60), ("watch-2", 60))]
    await asyncio.sleep(0)  # every waiter queued
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["watch-1", "watch-2", "default-1", "default-2"]


async def test_a_cancelled_waiter_neither_leaks_nor_holds_a_slot() -> None:
    gate = PriorityGate(1)
    await gate.acquire(1)
    waiter = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    async with asyncio.timeout(1):  # the slot is free again, not given to the cancelled one
        await gate.acquire(5)


async def test_a_slot_granted_as_its_waiter_is_cancelled_is_handed_on() -> None:
    gate = PriorityGate(1)
    await gate.acquire(1)
    first = asyncio.create_task(gate.acquire(1))
    second = asyncio.create_task(gate.acquire(2))
    await asyncio.sleep(0)
    gate.release()  # granted to ``first`` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(1):
        await second


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityGate(0)
