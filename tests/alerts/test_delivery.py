"""Webhook delivery against real receivers on 127.0.0.1: retries, outbox, grouping, formats."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from kzprobe.alerts.core import Alerts
from kzprobe.alerts.delivery import backoff
from kzprobe.config.model import Webhook
from tests.alerts.conftest import (
    MakeAlerts,
    Receiver,
    alerts_config,
    blocked,
    ok,
    read_events,
)
from tests.servers import eventually, refused_port

ROOT = Path(__file__).resolve().parents[2]


async def flip(alerts: Alerts, targets: list[str], sweeps: int = 2, start: int = 0) -> None:
    """``sweeps`` sweeps in which every target looks blocked: each becomes a blocked event."""
    for n in range(start, start + sweeps):
        for target in targets:
            alerts.observe(blocked(target, sweep=f"s{n}"))
        await alerts.sweep_finished("watch", f"s{n}", records=len(targets))


def ids(receiver: Receiver) -> list[str]:
    return [body["event_id"] for body in receiver.delivered()]


async def test_receiver_down_then_up_loses_nothing(tmp_path: Path, receiver: Receiver,
                                                   make_alerts: MakeAlerts) -> None:
    """503 for a while, then 200: every event arrives, same ids, in order, none lost."""
    receiver.fail = 4
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    await flip(alerts, ["https://a.test/", "https://b.test/", "https://c.test/"])
    written = [e["event_id"] for e in read_events(tmp_path)]
    assert len(written) == 3
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    received = ids(receiver)
    assert received[4:] == written  # the first four were answered 503, then retried
    assert set(received) == set(written)
    for headers, body in receiver.requests:
        assert headers["Idempotency-Key"] == orjson.loads(body)["event_id"]
    reading = alerts.reading()
    assert (reading.delivered, reading.failed) == (3, 4)


async def test_undelivered_events_are_delivered_after_a_restart(
        tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """Closed while the receiver fails: the events wait in the outbox for the next start."""
    receiver.fail = 10**6
    config = alerts_config(tmp_path, Webhook(url=receiver.url))
    first = await make_alerts(config)
    await flip(first, ["https://a.test/", "https://b.test/"])
    await first.aclose(0.3)
    assert first.reading().pending == 2
    receiver.fail = 0
    receiver.requests.clear()
    second = await make_alerts(config)
    await eventually(lambda: second.reading().pending == 0, timeout=30)
    assert ids(receiver) == [e["event_id"] for e in read_events(tmp_path)]
    third = await make_alerts(config)  # delivered means delivered: nothing again
    await asyncio.sleep(0.3)
    assert third.reading().pending == 0 and len(receiver.requests) == 2


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from kzprobe.alerts.core import Alerts
    from kzprobe.config.model import Webhook
    from tests.alerts.conftest import alerts_config, blocked

    async def main():
        config = alerts_config(Path(sys.argv[1]), Webhook(url=sys.argv[2]), max_backoff=60.0)
        alerts = Alerts(config, probe_id="vps1")
        await alerts.start()
        for n in range(2):
            for target in ("https://a.test/", "https://b.test/"):
                alerts.observe(blocked(target, sweep=f"s{n}"))
            await alerts.sweep_finished("watch", f"s{n}", records=2)
        print("written", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


@pytest.mark.slow
async def test_kill_9_before_delivery_then_a_new_alerts_delivers(
        tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """Events written, the process SIGKILLed before any delivery: a new Alerts sends them."""
    receiver.fail = 10**6  # the child's POSTs all fail
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(tmp_path), receiver.url, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        async with asyncio.timeout(60):
            while (line := await child.stdout.readline()) != b"written\n":
                assert line, "the child ended before writing its events"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    written = [e["event_id"] for e in read_events(tmp_path)]
    assert len(written) == 2
    receiver.fail = 0
    receiver.requests.clear()
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    assert ids(receiver) == written


async def test_300_changes_in_one_sweep_are_grouped(tmp_path: Path, receiver: Receiver,
                                                    make_alerts: MakeAlerts) -> None:
    """A list-wide block: a handful of grouped POSTs with the count, the first N and all ids."""
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    targets = [f"https://site{n}.test/" for n in range(300)]
    await flip(alerts, targets)
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    bodies = receiver.delivered()
    assert 1 <= len(bodies) <= 3
    assert all(body["kind"] == "grouped" for body in bodies)
    assert sum(body["count"] for body in bodies) == 300
    assert [i for body in bodies for i in body["event_ids"]] == \
        [e["event_id"] for e in read_events(tmp_path)]
    assert all(len(body["events"]) == 10 for body in bodies)
    assert bodies[0]["summary"].startswith("300 targets changed on AS9198")


async def test_a_few_changes_are_sent_one_by_one(tmp_path: Path, receiver: Receiver,
                                                 make_alerts: MakeAlerts) -> None:
    """Up to group_above changes in a sweep: one POST each, the event itself."""
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    await flip(alerts, [f"https://site{n}.test/" for n in range(5)])
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    assert [body["kind"] for body in receiver.delivered()] == ["blocked"] * 5


@pytest.mark.parametrize("fmt", ["json", "slack", "matrix", "text"])
async def test_formats(tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts,
                       fmt: str) -> None:
    """Each format's body: the event (json), {"text"} (slack), m.text (matrix), plain text."""
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url, format=fmt)))
    await flip(alerts, ["https://twitter.com/"])
    await eventually(lambda: len(receiver.requests) == 1, timeout=30)
    (event,) = read_events(tmp_path)
    headers, body = receiver.requests[0]
    assert headers["Idempotency-Key"] == event["event_id"]
    if fmt == "json":
        assert headers["Content-Type"] == "application/json"
        assert orjson.loads(body) == event
        return
    if fmt == "text":
        assert headers["Content-Type"].startswith("text/plain")
        text = body.decode()
    elif fmt == "slack":
        (text,) = orjson.loads(body).values()
    else:
        value = orjson.loads(body)
        assert value["msgtype"] == "m.text"
        text = value["body"]
    assert "https[:]//twitter[.]com/ blocked on AS9198" in text
    assert "twitter.com" not in text  # link-free
    assert event["event_id"] in text
    assert event["evidence"][0]["measurement_uid"] in text


async def test_grouped_readable_message(tmp_path: Path, receiver: Receiver,
                                        make_alerts: MakeAlerts) -> None:
    """A grouped slack message names the count, the first N and every event id."""
    config = alerts_config(tmp_path, Webhook(url=receiver.url, format="slack"), group_first=3)
    alerts = await make_alerts(config)
    await flip(alerts, [f"https://site{n}.test/" for n in range(8)])
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    (body,) = receiver.delivered()
    text = body["text"]
    assert "8 targets changed on AS9198" in text and "... and 5 more" in text
    assert text.count("\n- ") == 3
    assert all(e["event_id"] in text for e in read_events(tmp_path))


async def test_bearer_token(tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """A webhook's token goes as Authorization: Bearer, to that webhook."""
    alerts = await make_alerts(alerts_config(
        tmp_path, Webhook(url=receiver.url, token="s3cret-token")))
    await flip(alerts, ["https://twitter.com/"])
    await eventually(lambda: len(receiver.requests) == 1, timeout=30)
    assert receiver.requests[0][0]["Authorization"] == "Bearer s3cret-token"


async def test_heartbeat(tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """After every finished sweep, one POST with probe id, group, sweep, time and records."""
    alerts = await make_alerts(alerts_config(tmp_path, heartbeat_url=receiver.url))
    alerts.observe(ok())
    await alerts.sweep_finished("watch", "s1", records=1)
    await eventually(lambda: len(receiver.requests) == 1, timeout=30)
    beat = receiver.delivered()[0]
    assert {k: beat[k] for k in ("probe_id", "group", "sweep_id", "records")} == \
        {"probe_id": "vps1", "group": "watch", "sweep_id": "s1", "records": 1}
    assert beat["finished_at"].endswith("Z")
    assert alerts.reading().heartbeats_ok == 1


async def test_heartbeat_failure_is_counted_not_retried(tmp_path: Path,
                                                        make_alerts: MakeAlerts) -> None:
    """A dead heartbeat receiver: counted and logged, the sweep goes on, no retry loop."""
    url = f"http://127.0.0.1:{refused_port()}/beat"
    alerts = await make_alerts(alerts_config(tmp_path, heartbeat_url=url))
    await alerts.sweep_finished("watch", "s1", records=0)
    await eventually(lambda: alerts.reading().heartbeats_failed == 1, timeout=30)
    await asyncio.sleep(0.3)
    assert alerts.reading().heartbeats_failed == 1


async def test_outbox_is_bounded(tmp_path: Path, receiver: Receiver,
                                 make_alerts: MakeAlerts) -> None:
    """Above max_pending the oldest undelivered events are dropped and counted."""
    receiver.fail = 10**6
    config = alerts_config(tmp_path, Webhook(url=receiver.url), max_pending=3, group_above=100)
    alerts = await make_alerts(config)
    await flip(alerts, [f"https://site{n}.test/" for n in range(5)])
    reading = alerts.reading()
    assert (reading.pending, reading.dropped) == (3, 2)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    """1, 2, 4 ... s with jitter below each, never above the cap; Retry-After up to the cap."""
    for attempt in range(12):
        delay = backoff(attempt, 300.0)
        assert min(300.0, 2.0 ** attempt) / 2 <= delay <= min(300.0, 2.0 ** attempt)
    assert backoff(3, 300.0, retry_after=120.0) == 120.0
    assert backoff(3, 10.0, retry_after=120.0) == 10.0


async def test_flip_blocked_ok_blocked_posts_three_events(
        tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """blocked -> ok -> blocked during one run: exactly three POSTs, in that order."""
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    looks = [ok, ok, blocked, blocked, ok, ok, blocked, blocked]
    for n, make in enumerate(looks):
        alerts.observe(make(sweep=f"s{n}"))
        await alerts.sweep_finished("watch", f"s{n}", records=1)
    await eventually(lambda: len(receiver.requests) == 3, timeout=30)
    await asyncio.sleep(0.2)
    bodies = receiver.delivered()
    assert [b["kind"] for b in bodies] == ["blocked", "unblocked", "blocked"]
    assert [b["seq"] for b in bodies] == [1, 2, 3]


async def test_matrix_homeserver_url_is_a_put_with_the_transaction_id(
        tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """A Matrix send URL gets PUT .../send/m.room.message/<event id>, the bot's token."""
    room = f"http://127.0.0.1:{receiver.port}/_matrix/client/v3/rooms/!r:hs/send/m.room.message"
    alerts = await make_alerts(alerts_config(
        tmp_path, Webhook(url=room, format="matrix", token="bot-token")))
    await flip(alerts, ["https://twitter.com/"])
    await eventually(lambda: len(receiver.requests) == 1, timeout=30)
    (event,) = read_events(tmp_path)
    assert receiver.paths == [
        f"PUT /_matrix/client/v3/rooms/!r:hs/send/m.room.message/{event['event_id']}"]
    headers, body = receiver.requests[0]
    assert headers["Authorization"] == "Bearer bot-token"
    assert orjson.loads(body)["msgtype"] == "m.text"


async def test_a_refused_message_is_dropped_and_later_ones_still_arrive(
        tmp_path: Path, receiver: Receiver, make_alerts: MakeAlerts) -> None:
    """A 400 is the receiver refusing that message: it is dropped (counted, not retried) and
    the events after it are delivered; a 429 would have been retried."""
    receiver.fail, receiver.status = 1, 400
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    await flip(alerts, ["https://a.test/", "https://b.test/", "https://c.test/"])
    written = [e["event_id"] for e in read_events(tmp_path)]
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    assert ids(receiver) == written  # each POSTed once: the refused one was not sent again
    reading = alerts.reading()
    assert (reading.delivered, reading.failed, reading.dropped) == (2, 1, 1)


async def test_too_many_requests_is_retried(tmp_path: Path, receiver: Receiver,
                                            make_alerts: MakeAlerts) -> None:
    receiver.fail, receiver.status = 2, 429
    alerts = await make_alerts(alerts_config(tmp_path, Webhook(url=receiver.url)))
    await flip(alerts, ["https://a.test/"])
    await eventually(lambda: alerts.reading().pending == 0, timeout=30)
    written = [e["event_id"] for e in read_events(tmp_path)]
    assert ids(receiver) == written * 3
    assert (alerts.reading().delivered, alerts.reading().dropped) == (1, 0)
