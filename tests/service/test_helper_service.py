"""`kzprobe helper` as a real process under real signals: SIGHUP does not end it, and it
speaks systemd's notify protocol (READY, WATCHDOG, STOPPING) like the daemon."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.service.harness import DaemonProcess, NotifySocket

pytestmark = pytest.mark.slow


@pytest.fixture
async def helper_process(tmp_path: Path) -> AsyncIterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        await process.kill()


async def _start(tmp_path: Path, started: list[DaemonProcess],
                 env: dict[str, str] | None = None) -> tuple[DaemonProcess, str]:
    config = tmp_path / "helper.toml"
    config.write_text('[helper]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    process = await DaemonProcess(config, tmp_path / "helper.log", env, command="helper").start()
    started.append(process)
    url = str((await process.wait_event("helper_listening"))["url"])
    return process, url


async def _hello(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status


async def test_sighup_does_not_stop_the_helper(
        tmp_path: Path, helper_process: list[DaemonProcess]) -> None:
    """SIGHUP (exit 129 would look clean to Restart=on-failure) is logged and ignored."""
    helper, url = await _start(tmp_path, helper_process)
    assert await _hello(url) == 200
    helper.signal(signal.SIGHUP)
    await helper.wait_event("helper_sighup_ignored")
    await asyncio.sleep(0.3)
    assert helper.proc is not None and helper.proc.returncode is None
    assert await _hello(url) == 200
    assert await helper.stop(timeout=15) == 0


async def test_helper_notifies_ready_watchdog_and_stopping(
        tmp_path: Path, helper_process: list[DaemonProcess],
        notify_socket: NotifySocket) -> None:
    """READY=1 once listening, WATCHDOG=1 every half WATCHDOG_USEC, STOPPING=1 on SIGTERM."""
    helper, url = await _start(tmp_path, helper_process,
                               {"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "400000"})
    await notify_socket.wait_for(lambda line: line == "READY=1")
    await notify_socket.wait_for(lambda line: line.startswith("STATUS=") and url in line)
    since = time.monotonic()
    await asyncio.sleep(1.5)
    assert notify_socket.count("WATCHDOG=1", since) >= 5  # every 0.2 s
    assert await helper.stop(timeout=15) == 0
    assert "STOPPING=1" in notify_socket.fields()
