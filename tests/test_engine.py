"""The engine: bounded pool, rate limit, per-host gate, crash isolation, interruption."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kzprobe.config import Config
from kzprobe.engine import Emit, Engine, Lookup
from kzprobe.measure.experiments.web_connectivity import WebConnectivity
from kzprobe.measure.loader import experiment_for
from kzprobe.measure.ratelimit import HostLimiter, TokenBucket
from kzprobe.measure.resources import build_resources
from kzprobe.targets import parse_target
from kzprobe.verdict.pipeline import Pipeline
from tests.servers import DnsServer, WebSite, eventually


class _Exploding(WebConnectivity):
    """An experiment with a bug: the engine must turn it into a record and go on."""

    async def measure(self, target: Any, ctx: Any, clock: Any) -> dict[str, Any]:
        raise RuntimeError("bug in probe for 203.0.113.9")


def _engine(config: Config, emit: Emit, experiments: Lookup = experiment_for) -> Engine:
    """An engine given everything it needs, as the service builds one."""
    return Engine(build_resources(config), Pipeline(config), emit, experiments=experiments)


async def test_token_bucket_spaces_acquisitions() -> None:
    """After the burst, tokens arrive at `rate` per second."""
    bucket = TokenBucket(rate=50, capacity=5)
    start = time.monotonic()
    for _ in range(15):
        await bucket.acquire()
    elapsed = time.monotonic() - start
    assert elapsed >= 10 / 50 * 0.9  # 10 tokens beyond the burst at 50/s
    assert bucket.waits >= 9


async def test_host_limiter_bounds_concurrency_per_ip() -> None:
    """No more than per_host holders of one IP at once; other IPs are independent."""
    limiter = HostLimiter(2)
    active = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def hold(ip: str) -> None:
        async with limiter.slot(ip):
            active[ip] += 1
            peak[ip] = max(peak[ip], active[ip])
            await asyncio.sleep(0.01)
            active[ip] -= 1

    await asyncio.gather(*(hold(ip) for ip in "ab" * 10))
    assert peak == {"a": 2, "b": 2}
    assert len(limiter) == 0  # nothing remembered once idle


async def test_host_limiter_cancelled_waiter_gives_its_place_back() -> None:
    """A measurement cancelled while waiting for its IP's slot leaves no trace in the gate."""
    limiter = HostLimiter(1)
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with limiter.slot("a"):
            holding.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await holding.wait()
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await first
    assert len(limiter) == 0
    async with limiter.slot("a"):  # the gate still opens
        pass


async def test_sweep_bounds_in_flight_and_emits_every_record(
        config_factory: Callable[..., Config], dns_server: DnsServer, website: WebSite) -> None:
    """`limits.concurrency` bounds measurements in flight; every target yields one record."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    config = config_factory(dns=dns_server, limits={"concurrency": 3, "rate": 1000})
    records: list[dict[str, Any]] = []
    peak = 0

    async def emit(record: dict[str, Any]) -> None:
        records.append(record)

    engine = _engine(config, emit)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.in_flight)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    targets = [parse_target(f"http://site.test:{website.http_port}/slow?s=0.05&i={i}")
               for i in range(12)]
    summary = await engine.sweep(targets)
    watcher.cancel()
    await engine.aclose()
    assert summary.measured == len(records) == 12
    assert 1 <= peak <= 3


async def test_a_crashing_experiment_becomes_a_record(
        config_factory: Callable[..., Config]) -> None:
    """An unexpected exception is an unknown_failure record (IP scrubbed); the sweep goes on."""
    records: list[dict[str, Any]] = []
    schemes: list[str] = []

    async def emit(record: dict[str, Any]) -> None:
        records.append(record)

    def exploding(scheme: str) -> _Exploding:
        schemes.append(scheme)
        return _Exploding()

    engine = _engine(config_factory(), emit, exploding)
    try:
        summary = await engine.sweep([parse_target("http://a.test/"),
                                      parse_target("http://b.test/")])
    finally:
        await engine.aclose()
    assert schemes == ["http", "http"]  # the injected lookup, not the module registry
    assert summary.measured == 2
    failure = records[0]["test_keys"]["http_experiment_failure"]
    assert failure.startswith("unknown_failure: RuntimeError")
    assert "203.0.113.9" not in failure and "[scrubbed]" in failure


async def test_interrupt_records_in_flight_measurements(
        config_factory: Callable[..., Config], dns_server: DnsServer, website: WebSite) -> None:
    """Stop + interrupt: queued targets are not started, in-flight ones end as `interrupted`."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    config = config_factory(dns=dns_server, limits={"concurrency": 2},
                            timeouts={"http": 30, "measurement": 60})
    records: list[dict[str, Any]] = []

    async def emit(record: dict[str, Any]) -> None:
        records.append(record)

    engine = _engine(config, emit)
    targets = [parse_target(f"http://site.test:{website.http_port}/slow?s=20&i={i}")
               for i in range(10)]
    sweep = asyncio.create_task(engine.sweep(targets))
    await eventually(lambda: engine.in_flight >= 2)
    engine.stop()
    engine.interrupt()
    summary = await asyncio.wait_for(sweep, 10)
    await engine.aclose()
    assert summary.interrupted == 2
    assert [r["test_keys"]["http_experiment_failure"] for r in records] == ["interrupted"] * 2
