"""Endpoint records the engine writes itself (deadline, crash, shutdown) keep the endpoint
shape of docs/record-format.md: ``reachable``/``failure``/``failed_operation``, the
experiment's own (empty) keys, and none of web_connectivity's keys."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kzprobe.engine import build_engine
from kzprobe.targets import parse_target
from kzprobe.verdict.outcome import is_interrupted
from tests.endpoints.conftest import endpoint_config
from tests.servers import RawServer, eventually

WEB_KEYS = ("requests", "agent", "http_experiment_failure", "socksproxy", "client_resolver")
# The keys every endpoint run writes, and each experiment's own exchange (empty here).
ENDPOINT_KEYS = ("endpoint", "x_protocol", "queries", "tcp_connect", "tls_handshakes",
                 "network_events", "x_endpoint_results", "x_sni_checks", "control",
                 "control_failure", "interference", "blocking", "accessible")
OWN_KEYS = {"tcp": ("x_tcp",), "tor": ("x_tor_link", "targets")}



def _assert_endpoint_shape(record: dict[str, Any], scheme: str, failure: str) -> None:
    keys = record["test_keys"]
    assert keys["reachable"] is False
    assert keys["failure"] == failure
    assert keys["failed_operation"] == "top_level"
    assert [k for k in WEB_KEYS if k in keys] == []
    assert [k for k in (*ENDPOINT_KEYS, *OWN_KEYS[scheme]) if k not in keys] == []
    assert keys["x_protocol"] == scheme
    if scheme == "tor":
        (entry,) = keys["targets"].values()
        assert entry["failure"] == failure


@pytest.mark.parametrize("scheme", ["tcp", "tor"])
async def test_past_the_deadline_is_an_endpoint_record(ca_file: Path, silent: RawServer,
                                                       scheme: str) -> None:
    """The measurement deadline fires while the helper never answers: a timeout record in
    the endpoint's own shape, judged as endpoints are."""
    config = endpoint_config(ca_file, f"http://127.0.0.1:{silent.port}/",
                             timeouts={"measurement": 0.5, "control": 30.0, "tls": 30.0})
    engine = build_engine(config)
    try:
        record = await engine.measure(parse_target(f"{scheme}://127.0.0.1:{silent.port}"))
    finally:
        await engine.aclose()
    _assert_endpoint_shape(record, scheme, "generic_timeout_error")
    assert record["test_keys"]["interference"] == []
    assert not is_interrupted(record)


async def test_interrupted_endpoint_is_an_endpoint_record(ca_file: Path,
                                                          silent: RawServer) -> None:
    """Shutdown past its grace cancels a tcp:// run waiting on its helper: the record says
    ``interrupted`` in the endpoint keys, and the sweep counts it as interrupted."""
    config = endpoint_config(ca_file, f"http://127.0.0.1:{silent.port}/",
                             timeouts={"measurement": 60.0, "control": 60.0})
    records: list[dict[str, Any]] = []

    async def emit(record: dict[str, Any]) -> None:
        records.append(record)

    engine = build_engine(config, emit)
    sweep = asyncio.create_task(engine.sweep([parse_target(f"tcp://127.0.0.1:{silent.port}")]))
    try:
        await eventually(lambda: silent.connections >= 2)  # the connect, then the helper
        engine.stop()
        engine.interrupt()
        summary = await asyncio.wait_for(sweep, 10)
    finally:
        await engine.aclose()
    (record,) = records
    _assert_endpoint_shape(record, "tcp", "interrupted")
    assert is_interrupted(record)
    assert summary.interrupted == 1
