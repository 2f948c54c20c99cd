"""Records, configs and a real segment writer for the upload tests (all on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from kzprobe.config import Config
from kzprobe.config.parse import parse_config
from kzprobe.storage.sink import NdjsonSink

PUBLIC_IP = "198.18.0.7"  # the probe's "public" address in tests (never dialled)


def record(input_: str = "https://site.example/", **over: Any) -> dict[str, Any]:
    """An OONI-shaped kzprobe record (df-000-base top level)."""
    value: dict[str, Any] = {
        "annotations": {"engine_name": "kzprobe", "kzprobe_group": "default"},
        "data_format_version": "0.2.0", "input": input_,
        "measurement_start_time": "2026-12-07 23:00:00", "probe_asn": "AS9198",
        "probe_cc": "KZ", "probe_ip": "127.0.0.1", "probe_network_name": "Test ISP",
        "report_id": "", "software_name": "kzprobe", "software_version": "0.1.0",
        "test_keys": {"blocking": False, "accessible": True}, "test_name": "web_connectivity",
        "test_runtime": 0.5, "test_start_time": "2026-12-07 23:00:00", "test_version": "0.5.28",
        "x_measurement_uid": uuid.uuid4().hex,
    }
    value.update(over)
    return value


def config(out: Path, url: str, **upload: Any) -> Config:
    table = {"ooni_collector": url, "max_backoff": 1.0, "timeout": 5.0, **upload}
    return parse_config({"output": {"dir": str(out)}, "upload": table,
                         "probe": {"public_ip": PUBLIC_IP}}, where="t.toml").config


class Segments:
    """The daemon's real writer: each :meth:`write` is one closed (published) segment."""

    def __init__(self, cfg: Config) -> None:
        self.sink = NdjsonSink(cfg.output, probe_id="uploadtest")

    async def start(self) -> Segments:
        await self.sink.start()
        return self

    async def write(self, records: list[dict[str, Any]]) -> None:
        for value in records:
            await self.sink.write(orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE))
        await self.sink.rotate()

    async def close(self) -> None:
        await self.sink.aclose()


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``check`` until true; fail after ``timeout`` s (a bound, not a speed claim)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if check() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert check(), f"not within {timeout} s: {what}"
