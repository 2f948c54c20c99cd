"""One word per record, the same for the sweep summary and ``kzprobe_measurements_total``:
real sweeps of websites and endpoints (ok, failed, blocked, interrupted) on loopback.
An endpoint that does not answer is a failure, with or without a control."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kzprobe.config import Config
from kzprobe.engine import SweepSummary, build_engine
from kzprobe.ops.metrics import Metrics, Reading
from kzprobe.targets import parse_target
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import endpoint_config
from tests.servers import DnsServer, RawServer, WebSite, eventually, refused_port

# name: (URI template, uses the control helper, interrupted mid-run, expected word)
CASES: dict[str, tuple[str, bool, bool, str]] = {
    "web ok": ("http://site.test:{http}/", False, False, "ok"),
    "web refused": ("http://127.0.0.1:{refused}/", False, False, "failure"),
    "web sni reset": ("https://site.test:{filtered}/", False, False, "anomaly"),
    "web interrupted": ("http://127.0.0.1:{silent}/", False, True, "interrupted"),
    "tcp reachable": ("tcp://127.0.0.1:{http}", False, False, "ok"),
    "tcp refused, no control": ("tcp://127.0.0.1:{refused}", False, False, "failure"),
    "tcp refused, control too": ("tcp://127.0.0.1:{refused}", True, False, "failure"),
    "tls sni reset": ("tls://127.0.0.1:{filtered}?sni=site.test", False, False, "anomaly"),
    "tcp interrupted": ("tcp://127.0.0.1:{silent}", True, True, "interrupted"),
}



def _reading() -> Reading:
    return Reading(0, 0, 0, 0, 0, 0, 0, 0, False, 0, 0.0, 0.0)


def _summary_word(summary: SweepSummary) -> str:
    counts = {"interrupted": summary.interrupted, "anomaly": summary.anomalies,
              "failure": summary.failures}
    words = [word for word, count in counts.items() if count]
    assert len(words) <= 1 and sum(counts.values()) <= 1, counts
    return words[0] if words else "ok"


async def _sweep(config: Config, uri: str, metrics: Metrics,
                 interrupt_when: Callable[[], bool] | None) -> tuple[SweepSummary, dict[str, Any]]:
    records: list[dict[str, Any]] = []

    async def emit(record: dict[str, Any]) -> None:
        metrics.observe(record)
        records.append(record)

    engine = build_engine(config, emit)
    try:
        sweep = asyncio.create_task(engine.sweep([parse_target(uri)]))
        if interrupt_when is not None:
            await eventually(interrupt_when)
            engine.stop()
            engine.interrupt()
        summary = await asyncio.wait_for(sweep, 30)
    finally:
        await engine.aclose()
    (record,) = records
    return summary, record


@pytest.mark.parametrize("name", list(CASES))
async def test_summary_and_metrics_agree(name: str, ca_file: Path, dns_server: DnsServer,
                                         website: WebSite, helper_url: str,
                                         silent: RawServer) -> None:
    template, controlled, interrupted, expected = CASES[name]
    dns_server.zone["site.test"] = ["127.0.0.1"]
    async with contextlib.AsyncExitStack() as stack:
        box = await stack.enter_async_context(
            tcp_filter(website.https_port, rules={"site.test": "reset"}))
        uri = template.format(http=website.http_port, refused=refused_port(),
                              filtered=box.address[1], silent=silent.port)
        helper = (f"http://127.0.0.1:{silent.port}/" if interrupted else helper_url
                  ) if controlled else None
        config = endpoint_config(ca_file, helper, dns=dns_server,
                                 timeouts={"http": 30.0, "control": 30.0, "measurement": 30.0})
        metrics = Metrics(_reading)
        summary, record = await _sweep(config, uri, metrics,
                                       (lambda: silent.connections >= 1) if interrupted else None)
    words = {w for w in ("ok", "anomaly", "failure", "interrupted")
             if metrics.registry.get_sample_value("kzprobe_measurements_total", {"result": w})}
    keys = record["test_keys"]
    context = {k: keys.get(k) for k in ("reachable", "failure", "http_experiment_failure",
                                        "blocking", "interference")}
    assert words == {expected}, context
    assert _summary_word(summary) == expected, context
