"""The uploader against the spec collector: records written by the real writer, submitted
once, resumed from the durable cursor, with 429/5xx/4xx, expired reports and downtime."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest

from kzprobe import failures
from kzprobe.ops.metrics import Metrics, Reading
from kzprobe.upload.outbox import OUTBOX_FILE
from kzprobe.upload.uploader import Uploader
from tests.upload.collector_server import CollectorServer, Fault
from tests.upload.helpers import PUBLIC_IP, Segments, config, record, until


@pytest.fixture
async def collector() -> AsyncIterator[CollectorServer]:
    server = await CollectorServer().start()
    yield server
    await server.stop()


async def started(out: Path, server: CollectorServer, **upload: object
                  ) -> tuple[Uploader, Segments]:
    cfg = config(out, server.url, **upload)
    uploader = Uploader(cfg)
    await uploader.start()
    return uploader, await Segments(cfg).start()


def uids(records: list[dict[str, object]]) -> set[str]:
    return {str(r["x_measurement_uid"]) for r in records}


async def test_submits_each_record_once_and_resumes(tmp_path: Path,
                                                    collector: CollectorServer) -> None:
    """Target records go through open/update as the spec says; anchors and interrupted
    records stay home; a restarted uploader sends nothing twice and picks up new segments."""
    uploader, segments = await started(tmp_path, collector)
    sent = [record(f"https://s{i}.example/") for i in range(7)]
    anchor = record("https://anchor.example/",
                    annotations={"kzprobe_group": "anchors"})
    cut = record("https://cut.example/", test_keys={"failure": failures.INTERRUPTED})
    endpoint = record("tcp://198.51.100.1:443", test_name="tcpconnect")
    await segments.write([*sent[:4], anchor, endpoint])
    await segments.write([cut, *sent[4:]])
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 8)
    await uploader.aclose(timeout=5)
    assert collector.violations == []
    assert Counter(collector.uids()) == Counter(uids([*sent, endpoint]))
    assert uploader.stats.submitted == 8 and uploader.stats.skipped == 2
    opened = {m["report_id"] for m in collector.measurements}
    assert len(opened) == 2  # one report per test (web_connectivity, tcpconnect)
    assert all(collector.reports[r].closed for r in opened)  # closed at shutdown
    assert (tmp_path / OUTBOX_FILE).exists()

    again = Uploader(config(tmp_path, collector.url))
    await again.start()
    assert await again.drain(10)
    assert len(collector.measurements) == 8  # nothing resent
    more = [record("https://later.example/")]
    await segments.write(more)
    again.nudge()
    await until(lambda: len(collector.measurements) == 9)
    await again.aclose(timeout=5)
    await segments.close()
    assert collector.uids()[-1] == more[0]["x_measurement_uid"]
    assert collector.violations == []


async def test_records_from_before_upload_was_enabled_stay_home(
        tmp_path: Path, collector: CollectorServer) -> None:
    """A collector the outbox does not know starts at the time it is configured."""
    cfg = config(tmp_path, collector.url)
    segments = await Segments(cfg).start()
    await segments.write([record()])
    await asyncio.sleep(1.1)  # the next segment's name starts in a later second
    uploader = Uploader(cfg)
    await uploader.start()
    fresh = record("https://fresh.example/")
    await segments.write([fresh])
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 1)
    assert await uploader.drain(10)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert collector.uids() == [fresh["x_measurement_uid"]]


async def test_retry_after_and_server_errors_are_retried(tmp_path: Path,
                                                         collector: CollectorServer) -> None:
    """429 and 503 wait for Retry-After; 500 and a bad open answer back off; all arrive."""
    collector.faults.extend([Fault(429, "open", "1"), Fault(500, "update"),
                             Fault(503, "update", "1")])
    uploader, segments = await started(tmp_path, collector, max_backoff=3.0, max_in_flight=1)
    records = [record(f"https://r{i}.example/") for i in range(3)]
    await segments.write(records)
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 3)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert collector.violations == [] and not collector.faults
    assert Counter(collector.uids()) == Counter(uids(records))
    assert uploader.stats.retried == 3
    first, second = collector.times[0], collector.times[1]
    assert first[1] == second[1] == "open"
    assert second[0] - first[0] >= 0.99  # Retry-After: 1 honoured (sleep never ends early)


async def test_a_refused_measurement_is_rejected_not_retried(
        tmp_path: Path, collector: CollectorServer) -> None:
    """A 4xx on an update: the report is opened again (it may have expired) and the record
    sent once more; refused again, it is rejected and the others go on."""
    uploader, segments = await started(tmp_path, collector)
    records = [record(f"https://b{i}.example/") for i in range(4)]
    bad = str(records[1]["x_measurement_uid"])
    collector.refuse_uids.add(bad)
    await segments.write(records)
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 3)
    assert await uploader.drain(10)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert uploader.stats.rejected == 1 and uploader.stats.submitted == 3
    attempts = sum(bad.encode() in body for body in collector.bodies)
    assert attempts == 2
    assert bad not in collector.uids() and collector.violations == []


async def test_expired_report_is_opened_again(tmp_path: Path,
                                              collector: CollectorServer) -> None:
    uploader, segments = await started(tmp_path, collector)
    first = [record(f"https://e{i}.example/") for i in range(3)]
    await segments.write(first)
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 3)
    collector.expire_reports()
    later = [record(f"https://f{i}.example/") for i in range(3)]
    await segments.write(later)
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 6)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert uploader.stats.rejected == 0 and uploader.stats.reports_opened == 2
    assert len({m["report_id"] for m in collector.measurements}) == 2
    assert Counter(collector.uids()) == Counter(uids([*first, *later]))
    assert collector.violations == []


async def test_collector_down_then_up(tmp_path: Path, collector: CollectorServer) -> None:
    """Refused connections back off; pending shows in the metrics; nothing is lost."""
    await collector.stop()
    uploader, segments = await started(tmp_path, collector, max_backoff=0.5)
    records = [record(f"https://d{i}.example/") for i in range(5)]
    await segments.write(records)
    uploader.nudge()
    await until(lambda: uploader.stats.retried >= 3 and uploader.stats.pending == 5)
    metrics = Metrics(lambda: Reading(0, 0, 0, 0, 0, 0, 0, 0, False, 0, 0.0, 0.0))
    metrics.add_upload(uploader.stats)
    text = generate_latest(metrics.registry).decode()
    assert "kzprobe_upload_pending 5.0" in text
    assert 'kzprobe_upload_total{result="submitted"} 0.0' in text
    await collector.start()
    await until(lambda: len(collector.measurements) == 5)
    await until(lambda: uploader.stats.pending == 0)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert Counter(collector.uids()) == Counter(uids(records))
    assert 'kzprobe_upload_total{result="submitted"} 5.0' in \
        generate_latest(metrics.registry).decode()


async def test_the_probe_address_is_never_uploaded(tmp_path: Path,
                                                   collector: CollectorServer) -> None:
    """A record the daemon could not scrub (written before [probe] public_ip was set) is
    scrubbed before it leaves: no request body holds the address in any spelling."""
    uploader, segments = await started(tmp_path, collector)
    leaky = record("https://leak.example/", test_keys={
        "requests": [{"response": {"body": f"your address is {PUBLIC_IP}",
                                   "headers": {"X-Client": f"::ffff:{PUBLIC_IP}"}}}],
        "client_resolver": PUBLIC_IP})
    await segments.write([leaky, record("https://clean.example/")])
    uploader.nudge()
    await until(lambda: len(collector.measurements) == 2)
    await uploader.aclose(timeout=5)
    await segments.close()
    assert collector.bodies and all(PUBLIC_IP.encode() not in b for b in collector.bodies)
    sent = next(m for m in collector.measurements if m["input"] == "https://leak.example/")
    assert sent["test_keys"]["client_resolver"] == "[scrubbed]"
    assert "[scrubbed]" in orjson.dumps(sent["test_keys"]["requests"]).decode()
