"""Thin, checked wrappers around ``ip``, ``iptables`` and ``sysctl`` inside network namespaces.

Every call has a deadline and raises :class:`LabError` with the command's stderr, so a fault
that cannot be installed fails the test loudly instead of letting it pass unfaulted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "kzl-"  # every namespace this package creates starts with it
NETNS_ETC = Path("/etc/netns")
LAB_NET = "198.18.0.0/15"
EGRESS_CHAIN = "KZL-EGRESS"


class LabError(RuntimeError):
    """The lab could not be built, changed or torn down as asked."""


def run(argv: Sequence[str], *, timeout: float = 10.0, check: bool = True,
        ns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command (inside ``ns`` if given) with a deadline; raise on failure when ``check``."""
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(full)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(full)} -> rc={proc.returncode}: {proc.stderr.strip()}")
    return proc


def iptables(ns: str, *args: str, table: str = "filter", check: bool = True,
             v6: bool = False) -> subprocess.CompletedProcess[str]:
    """``iptables -w`` in a namespace (``-w`` waits for the xtables lock instead of failing)."""
    tool = "ip6tables" if v6 else "iptables"
    return run([tool, "-w", "5", "-t", table, *args], ns=ns, check=check)


def sysctl(ns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl by writing /proc/sys (no dependency on procps)."""
    path = "/proc/sys/" + key.replace(".", "/")
    run(["sh", "-c", f"echo {value} > {path}"], ns=ns)


def can_create_namespaces() -> str | None:
    """Return None when this process can build the lab, else the reason it cannot."""
    if os.geteuid() != 0:
        return "lab needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            return f"lab needs `{tool}` (apt: iproute2 / iptables)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        run(["ip", "netns", "add", probe])
        run(["iptables", "-w", "5", "-L", "-n"], ns=probe)
    except (LabError, OSError) as exc:
        return f"cannot create network namespaces here: {exc}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def list_namespaces() -> list[str]:
    """Names of all namespaces known to ``ip netns``."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    """Pids of the processes living in a namespace."""
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_pids(pids: Sequence[int], grace: float = 2.0) -> None:
    """SIGTERM the given pids, wait up to ``grace`` seconds, then SIGKILL the survivors."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def delete_namespace(ns: str) -> None:
    """Kill what runs in ``ns``, delete it (veths and rules go with it) and its /etc/netns dir."""
    kill_pids(namespace_pids(ns))
    run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def owner_pid(ns: str) -> int | None:
    """The pid encoded in a lab namespace name ``kzl-<pid>-<suffix>-<role>``, if any."""
    parts = ns[len(PREFIX):].split("-")
    return int(parts[0]) if ns.startswith(PREFIX) and parts and parts[0].isdigit() else None


def cleanup_stale() -> list[str]:
    """Delete ``kzl-*`` namespaces whose creating process is gone (crashed earlier runs)."""
    removed = []
    for ns in list_namespaces():
        pid = owner_pid(ns)
        if ns.startswith(PREFIX) and (pid is None or not _alive(pid)):
            delete_namespace(ns)
            removed.append(ns)
    for parent in (NETNS_ETC, Path(tempfile.gettempdir())):  # resolv.conf dirs, workdirs
        for leftover in parent.glob(PREFIX + "*") if parent.is_dir() else []:
            pid = owner_pid(leftover.name)
            if pid is not None and not _alive(pid):
                shutil.rmtree(leftover, ignore_errors=True)
    return removed
