"""Fixtures for HTTP/3 tests: the probe with a DNS zone, and a helper (h3 is in tests/conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kzprobe.config import Config
from tests.conftest import Measure, measurer, serving_helper
from tests.endpoints.conftest import endpoint_config, helper_config
from tests.servers import DnsServer


@pytest.fixture
async def measure_web(ca_file: Path, dns_server: DnsServer) -> AsyncIterator[Measure]:
    """Measure a URL with the real engine (verdict included); site.test is 127.0.0.1."""
    dns_server.zone["site.test"] = ["127.0.0.1"]

    def configure(*, helper: str | None = None, **sections: Any) -> Config:
        sections.setdefault("timeouts", {}).setdefault("http", 3.0)
        return endpoint_config(ca_file, helper, dns_server, **sections)

    async with measurer(configure) as run:
        yield run


@pytest.fixture
async def helper(ca_file: Path, dns_server: DnsServer) -> AsyncIterator[str]:
    """A kzprobe helper resolving with the test zone, dialling from 127.0.0.2 (the
    loopback censors' exempt "outside")."""
    async with serving_helper(helper_config(ca_file, dns_server, http=3.0)) as url:
        yield url
