"""The OONI df-000 envelope around an experiment's ``test_keys``."""

from __future__ import annotations

import platform
import time
import uuid
from collections.abc import Mapping
from typing import Any

from kzprobe import __version__
from kzprobe.config import Config
from kzprobe.targets import Target

DATA_FORMAT_VERSION = "0.2.0"


_PLATFORM = platform.system().lower()
_ARCHITECTURE = platform.machine()


def ooni_time(epoch: float) -> str:
    """OONI's ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def build_record(
    *,
    target: Target,
    config: Config,
    test_name: str,
    test_version: str,
    test_keys: Mapping[str, Any],
    started: float,
    runtime: float,
    sweep_id: str | None = None,
) -> dict[str, Any]:
    """Assemble one measurement record (the same for ``measure`` and the daemon)."""
    resolver = config.dns.resolvers[0]
    annotations = {
        "engine_name": "kzprobe",
        "engine_version": __version__,
        "platform": _PLATFORM,
        "architecture": _ARCHITECTURE,
    }
    if target.category_code:
        annotations["category_code"] = target.category_code
    if sweep_id:
        annotations["kzprobe_sweep"] = sweep_id
    annotations["kzprobe_group"] = target.group
    if config.probe.id:
        annotations["kzprobe_probe_id"] = config.probe.id
    helper = config.control.helper_urls[0] if config.control.helper_urls else None
    start_time = ooni_time(started)
    return {
        "annotations": annotations,
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": {"dnst": 0, "httpt": 0, "tcpconnect": 0, "tlshandshake": 0},
        "input": target.input,
        "measurement_start_time": start_time,
        "test_start_time": start_time,
        "options": [],
        "probe_asn": config.probe.asn,
        "probe_cc": config.probe.cc,
        "probe_ip": "127.0.0.1",
        "probe_network_name": config.probe.network_name,
        "report_id": "",
        "resolver_asn": "AS0",
        "resolver_ip": "" if resolver.is_system else resolver.address,
        "resolver_network_name": "",
        "software_name": "kzprobe",
        "software_version": __version__,
        "test_helpers": {"backend": {"address": helper, "type": "https"}} if helper else {},
        "test_name": test_name,
        "test_version": test_version,
        "test_runtime": round(runtime, 6),
        "category_code": target.category_code,
        "test_keys": dict(test_keys),
        # OONI's backend assigns measurement_uid on upload; this one is kzprobe's, so that
        # change events can name the measurements that decided them.
        "x_measurement_uid": uuid.uuid4().hex,
    }
