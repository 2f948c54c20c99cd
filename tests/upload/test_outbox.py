"""The outbox's edges: bounded submissions in flight, a segment deleted by retention before
it was sent, unreadable lines, and a cursor that finished records out of order."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from kzprobe.storage.naming import SegmentName
from kzprobe.upload.outbox import Position, Window
from kzprobe.upload.uploader import Uploader
from tests.upload.collector_server import CollectorServer
from tests.upload.helpers import Segments, config, record, until


@pytest.fixture
async def collector() -> AsyncIterator[CollectorServer]:
    server = await CollectorServer().start()
    yield server
    await server.stop()


def test_window_moves_over_the_finished_prefix_only() -> None:
    window = Window(Position("a", 0))
    for line in (1, 2, 3):
        window.add(Position("b", line))
    assert not window.finish(Position("b", 2))  # 1 is still out: the cursor waits
    assert window.cursor == Position("a", 0)
    assert window.finish(Position("b", 1)) and window.cursor == Position("b", 2)
    assert window.finish(Position("b", 3)) and window.cursor == Position("b", 3)
    assert len(window) == 0


async def test_in_flight_is_bounded(tmp_path: Path, collector: CollectorServer) -> None:
    collector.delay = 0.1
    cfg = config(tmp_path, collector.url, max_in_flight=3)
    uploader = Uploader(cfg)
    await uploader.start()
    segments = await Segments(cfg).start()
    records = [record(f"https://n{i}.example/") for i in range(15)]
    await segments.write(records)
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 15)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert 1 < collector.most_active <= 3


async def test_a_segment_deleted_before_it_was_sent_is_passed_over(
        tmp_path: Path, collector: CollectorServer) -> None:
    """Retention may delete a segment during a long outage: the uploader goes on with the
    next one instead of stalling (the one it is reading stays readable through its fd)."""
    await collector.stop()
    cfg = config(tmp_path, collector.url, max_backoff=0.3, max_in_flight=1)
    uploader = Uploader(cfg)
    await uploader.start()
    segments = await Segments(cfg).start()
    reading = [record(f"https://a{i}.example/") for i in range(10)]
    deleted = [record(f"https://b{i}.example/") for i in range(3)]
    kept = [record(f"https://c{i}.example/") for i in range(3)]
    for batch in (reading, deleted, kept):
        await segments.write(batch)
    uploader.nudge()
    await until(lambda: uploader.stats.retried >= 2)
    files = list(tmp_path.glob("kzprobe-*.ndjson*"))  # noqa: ASYNC240
    second = sorted({p.name.split(".ndjson")[0]
                     for p in files})[1]
    for path in files:  # every form of it (plain, compressed)
        if path.name.split(".ndjson")[0] == second:
            os.unlink(path)
    await collector.start()
    await until(lambda: len(collector.measurements) == 13)
    assert await uploader.drain(10)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert Counter(collector.uids()) == Counter(r["x_measurement_uid"]
                                                for r in (*reading, *kept))


async def test_unreadable_lines_are_skipped(tmp_path: Path, collector: CollectorServer) -> None:
    cfg = config(tmp_path, collector.url)
    uploader = Uploader(cfg)
    await uploader.start()
    good = [record("https://g1.example/"), record("https://g2.example/")]
    name = SegmentName.new("kzprobe", "handmade", os.getpid(), 1)
    lines = [orjson.dumps(good[0]), b"{not json", b"[1, 2]", orjson.dumps(good[1]), b"torn"]
    (tmp_path / str(name)).write_bytes(b"\n".join(lines))
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 2)
    assert await uploader.drain(10)
    await uploader.aclose(timeout=5)
    assert Counter(collector.uids()) == Counter(r["x_measurement_uid"] for r in good)
    assert uploader.stats.skipped == 2 and collector.violations == []
