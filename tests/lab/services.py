"""Start ``python -m kzprobe.simnet <component>`` inside a namespace and wait for its READY line.

A component prints ``READY <json>`` on stdout once it listens and stops on SIGTERM. Output
goes to files (not pipes) so a chatty server can never block on a full pipe; the lab keeps
each process's pid and kills exactly those pids at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns import LabError

REPO_ROOT = Path(__file__).resolve().parents[2]


def lab_env() -> dict[str, str]:
    """Environment for lab processes: kzprobe importable from the checkout, nothing proxied."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(slots=True)
class Service:
    """One running component; ``ready`` is the JSON it printed after READY."""

    name: str
    ns: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    stdout: Path
    stderr: Path
    marker: str = "READY"  # a stdout line starting with it means "listening"
    stderr_marker: str | None = None  # or: a stderr line containing this (structlog events)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def signal_hup(self) -> None:
        """Ask the component to reload its rules file."""
        self.signal(signal.SIGHUP)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(5)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Block until the READY line appears; on failure kill the process and raise."""
        try:
            self.ready = _wait_ready(self, timeout)
        except LabError:
            self.stop(grace=1.0)
            raise
        return self.ready

    def log_tail(self, limit: int = 2000) -> str:
        """Last lines of stdout+stderr, for failure messages."""
        text = ""
        for path in (self.stdout, self.stderr):
            if path.exists():
                text += path.read_text(errors="replace")[-limit:]
        return text


def spawn(ns: str, name: str, argv: Sequence[str], workdir: Path, *,
          stderr_marker: str | None = None, env: Mapping[str, str] | None = None) -> Service:
    """Start ``argv`` in ``ns`` without waiting; call :meth:`Service.wait_ready` next."""
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                env={**lab_env(), **(env or {})})
    return Service(name=name, ns=ns, proc=proc, ready={}, stdout=out, stderr=err,
                   stderr_marker=stderr_marker)


def simnet_argv(component: str, args: Sequence[str]) -> list[str]:
    """``python -m kzprobe.simnet COMPONENT ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "kzprobe.simnet", component, *args]


def _wait_ready(service: Service, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = ready_line(service)
        if ready is not None:
            return ready
        if not service.alive():
            raise LabError(f"{service.name} exited rc={service.proc.returncode} before READY:\n"
                           f"{service.log_tail()}")
        time.sleep(0.02)
    raise LabError(f"{service.name} not READY after {timeout}s:\n{service.log_tail()}")


def ready_line(service: Service) -> dict[str, Any] | None:
    """The READY payload, or ``{"log": line}`` for a matching stderr line; None: not yet."""
    if service.stderr_marker is not None:
        for line in service.stderr.read_text(errors="replace").splitlines():
            if service.stderr_marker in line:
                return {"log": line}
        return None
    for line in service.stdout.read_text(errors="replace").splitlines():
        if line.startswith(service.marker):
            payload = line[len(service.marker):].strip()
            value = json.loads(payload) if payload else {}
            return value if isinstance(value, dict) else {"value": value}
    return None
