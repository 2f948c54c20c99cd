"""The bounded buffer between ``NdjsonSink.write()`` and the writer task."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal


def settle(done: asyncio.Future[None], ok: bool) -> None:
    """Finish a request's future; if the writer gave up first, fail it (and mark it seen)."""
    if done.done():
        return
    if ok:
        done.set_result(None)
        return
    done.set_exception(RuntimeError("sink gave up before the request was done"))
    done.exception()  # retrieved: the requester may have stopped waiting


@dataclass(slots=True)
class Request:
    """A rotate or close request, ordered after every record queued before it."""

    kind: Literal["rotate", "close"]
    done: asyncio.Future[None]


class Buffer:
    """Records (and rotate/close requests) between ``write()`` and the writer task.

    A plain deque with counters: appending costs no await, no future and no wake-up per
    record, which an ``asyncio.Queue`` would. Bounded in records and bytes (requests do
    not count); a single record larger than ``max_bytes`` still fits into an empty buffer.
    """

    def __init__(self, *, max_records: int, max_bytes: int) -> None:
        self._items: deque[bytes | Request] = deque()
        self._max_records = max(1, max_records)
        self._max_bytes = max_bytes
        self.records = 0
        self._bytes = 0
        self.requests = 0  # rotate/close requests waiting
        self._ready = asyncio.Event()  # set while there are items (wakes the writer)
        self._room = asyncio.Event()  # set while not full (wakes producers)
        self._room.set()

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def size(self) -> int:
        """Bytes of the records waiting."""
        return self._bytes

    def full(self) -> bool:
        return self.records >= self._max_records or (
            self.records > 0 and self._bytes >= self._max_bytes)

    async def wait_room(self) -> None:
        if self.full():
            self._room.clear()
        await self._room.wait()

    def release_waiters(self) -> None:
        """Wake every producer waiting for room (the sink no longer accepts records)."""
        self._room.set()

    async def wait_ready(self) -> None:
        if not self._items:
            self._ready.clear()
        await self._ready.wait()

    def push(self, item: bytes | Request) -> None:
        self._items.append(item)
        if isinstance(item, bytes):
            self.records += 1
            self._bytes += len(item)
        else:
            self.requests += 1
        if not self._ready.is_set():
            self._ready.set()

    def pop(self) -> bytes | Request:
        item = self._items.popleft()
        self._taken(item)
        return item

    def take_batch(self, first: bytes, max_bytes: int) -> tuple[list[bytes], Request | None]:
        """``first`` and the records after it up to ``max_bytes``, or up to a request."""
        batch, size, items = [first], len(first), self._items
        while items and size < max_bytes:
            item = items.popleft()
            self._taken(item)
            if isinstance(item, Request):
                return batch, item
            batch.append(item)
            size += len(item)
        return batch, None

    def take_all(self) -> list[bytes | Request]:
        items = list(self._items)
        self._items.clear()
        self.records = self._bytes = self.requests = 0
        self._room.set()
        return items

    def _taken(self, item: bytes | Request) -> None:
        if not isinstance(item, bytes):
            self.requests -= 1
        else:
            self.records -= 1
            self._bytes -= len(item)
            if not self._room.is_set() and not self.full():
                self._room.set()
