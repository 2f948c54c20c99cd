"""Fixtures for the namespace lab: ``lab`` (session) and ``lab_config`` (per test).

The lab needs root, ``ip netns`` and iptables. Where they are missing every lab test is
skipped with one reason, except under ``CI=true``, where that is a failure: a silently
skipped lab must never look green.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from . import endpoints, geoip, netns
from .endpoints import EndpointServers
from .geoip import LabGeoip
from .lab import Lab

_UNAVAILABLE: list[str] = []  # cached reason, so the check runs once per session


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here (None when it can); checked once."""
    if not _UNAVAILABLE:
        _UNAVAILABLE.append(netns.can_create_namespaces() or "")
    return _UNAVAILABLE[0] or None


def require_lab() -> None:
    """Skip (or, under CI=true, fail) when namespaces cannot be created."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"namespace lab unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"namespace lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The running lab; torn down at session end, which asserts nothing left 198.18.0.0/15."""
    require_lab()
    netns.cleanup_stale()
    instance = Lab.up()
    atexit.register(instance.close)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM -> KeyboardInterrupt -> finalizers run
    try:
        yield instance
    finally:
        signal.signal(signal.SIGTERM, previous)
        problems = instance.close()
        assert not problems, "lab teardown: " + "; ".join(problems)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def lab_config(lab: Lab, tmp_path: Path) -> Path:
    """A kzprobe config for the client namespace with the lab's defaults."""
    return lab.write_config(tmp_path)


@pytest.fixture(scope="session")
def lab_endpoints(lab: Lab) -> Iterator[EndpointServers]:
    """The real endpoint daemons in the internet namespace, started on first use."""
    servers = endpoints.start(lab)
    try:
        yield servers
    finally:
        endpoints.stop(lab, servers)


@pytest.fixture(scope="session")
def lab_geoip(lab: Lab) -> Iterator[LabGeoip]:
    """The lab's ASN/country databases and the helper that reads them, started on first use."""
    started = geoip.start(lab)
    try:
        yield started
    finally:
        geoip.stop(lab, started)


def require_endpoint(servers: EndpointServers, key: str) -> None:
    """Skip (under CI=true: fail) when the daemon serving ``key`` is not installed."""
    reason = servers.missing.get(key)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
