"""Service-test fixtures: the recording site, and daemon processes that never outlive a test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
import structlog

from tests.service.harness import DaemonProcess, NotifySocket, Site

StartDaemon = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """In-process daemons log through structlog; an earlier in-process ``kzprobe.cli.main``
    may have bound it to a capture stream pytest has since closed."""
    structlog.reset_defaults()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    server = Site()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    started: list[DaemonProcess] = []

    async def start(config: Path, env: Mapping[str, str] | None = None,
                    command: str = "run") -> DaemonProcess:
        log = tmp_path / f"daemon-{len(started)}.log"
        daemon = await DaemonProcess(config, log, env, command=command).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.kill()


@pytest.fixture
async def notify_socket() -> AsyncIterator[NotifySocket]:
    sock = NotifySocket().start()
    yield sock
    await sock.close()
