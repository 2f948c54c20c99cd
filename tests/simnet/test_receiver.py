"""kzprobe.simnet.receiver.Receiver: keeps every POST, answers 204, waits bounded."""

from __future__ import annotations

import aiohttp
import pytest

from kzprobe.simnet.receiver import Receiver


async def test_keeps_posts_by_path_and_wakes_a_waiter() -> None:
    async with Receiver("127.0.0.1") as receiver, aiohttp.ClientSession() as session:
        for path, body in (("/alerts", b'{"kind": "outage"}'), ("/heartbeat", b"{}")):
            async with session.post(receiver.url(path), data=body,
                                    headers={"Idempotency-Key": "k1",
                                             "Content-Type": "application/json"}) as answer:
                assert answer.status == 204
        posts = await receiver.wait_for("/alerts", 1, timeout=5)
    assert [(p.path, p.key, p.body, p.content_type) for p in posts] == [
        ("/alerts", "k1", b'{"kind": "outage"}', "application/json")]
    assert len(receiver.received("/heartbeat")) == 1


async def test_wait_for_is_bounded() -> None:
    async with Receiver("127.0.0.1") as receiver:
        with pytest.raises(TimeoutError):
            await receiver.wait_for("/heartbeat", 1, timeout=0.2)
