"""One real ``kzprobe run`` in the lab's client namespace, with a webhook receiver next to it
(:mod:`.webhook_receiver`), and readers for what it leaves: its JSON log, the event log
(``events-*.ndjson``), the webhook's bodies and, once stopped, its records."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import services
from .lab import Lab
from .services import Service

SINK = Path(__file__).with_name("webhook_receiver.py")
Event = dict[str, Any]


def inline(table: Mapping[str, Any]) -> str:
    """A TOML inline table of scalars (JSON strings are TOML basic strings)."""
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


def extra_sections(*, network: Mapping[str, Any], anchors: list[dict[str, str]], hook: str,
                   groups: Mapping[str, tuple[float, list[str]]]) -> str:
    """``[network]`` with anchors, ``[alerts]`` with one json webhook, ``[[targets.groups]]``
    (tomlw writes scalars and lists only)."""
    keys = "".join(f"{key} = {json.dumps(value)}\n" for key, value in network.items())
    text = f"\n[network]\n{keys}anchors = [{', '.join(inline(a) for a in anchors)}]\n"
    text += (f"\n[alerts]\nconfirm = 2\nmax_backoff = 2.0\n"
             f"webhooks = [{inline({'url': hook, 'format': 'json'})}]\n")
    for name, (interval, urls) in groups.items():
        text += (f"\n[[targets.groups]]\nname = {json.dumps(name)}\ninterval = {interval}\n"
                 f"jitter = 0.0\nurls = {json.dumps(urls, ensure_ascii=False)}\n")
    return text


def whole_lines(path: Path) -> list[str]:
    """The lines of a file another process appends to, less a last one it is still writing."""
    return path.read_text().split("\n")[:-1]


@dataclass
class LabDaemon:
    """A running daemon and its receiver; every reader parses the files afresh."""

    proc: Service
    sink: Service
    out: Path
    hooks: Path

    def log(self, name: str | None = None) -> list[Event]:
        found = []
        for line in self.proc.stderr.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and (name is None or item.get("event") == name):
                    found.append(item)
        return found

    def events(self) -> list[Event]:
        """The event log, in seq order."""
        found = []
        for path in sorted(self.out.glob("events-*.ndjson")):
            found += [json.loads(line) for line in whole_lines(path) if line.strip()]
        return sorted(found, key=lambda e: e["seq"])

    def network_events(self) -> list[Event]:
        return [e for e in self.events() if e.get("scope") == "network"]

    def target_events(self) -> list[Event]:
        return [e for e in self.events() if e.get("scope") != "network"]

    def posted(self) -> list[Event]:
        """The bodies POSTed to the webhook, in the order received."""
        if not self.hooks.exists():
            return []
        return [json.loads(line)["body"] for line in whole_lines(self.hooks) if line]

    def wait(self, what: Callable[[], Any], describe: str, timeout: float = 60.0) -> Any:
        """Poll ``what`` until it is truthy; fail with the daemon's state if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            if not self.proc.alive():
                raise AssertionError(f"daemon exited while waiting for {describe}:\n"
                                     f"{self.proc.log_tail(4000)}")
            time.sleep(0.1)
        rounds = [(r.get("timestamp"), r.get("raw"), r.get("state"))
                  for r in self.log("network_checked")][-10:]
        raise AssertionError(f"no {describe} within {timeout}s; network events: "
                             f"{[(e['kind'], e['to']['state']) for e in self.network_events()]}"
                             f"; last rounds: {rounds}")

    def network_change(self, to: str, after: int, timeout: float = 60.0) -> Event:
        """The first network event into ``to`` with seq above ``after``."""
        def found() -> Event | None:
            return next((e for e in self.network_events()
                         if e["seq"] > after and e["to"]["state"] == to), None)
        event: Event = self.wait(found, f"network event to {to}", timeout)
        return event

    def last_seq(self) -> int:
        events = self.events()
        return int(events[-1]["seq"]) if events else 0

    def sweeps(self, group: str) -> list[Event]:
        return [e for e in self.log("sweep_finished") if e.get("group") == group]

    def rounds(self) -> list[Event]:
        return self.log("network_checked")

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.signal(signal.SIGTERM)
        try:
            return self.proc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.stop(grace=1.0)
            raise AssertionError(f"daemon did not stop:\n{self.proc.log_tail()}") from None


@contextlib.contextmanager
def running(lab: Lab, config: Path, out: Path, tag: str) -> Iterator[LabDaemon]:
    """A webhook receiver, then ``kzprobe --log-level debug run`` in the client namespace
    (``config`` gets the receiver's URL wherever it says ``HOOK_URL``)."""
    hooks = out.parent / f"{tag}-hooks.ndjson"
    sink = services.spawn(lab.names.client, f"{tag}-sink", [sys.executable, str(SINK),
                                                            str(hooks)], lab.workdir)
    sink.wait_ready(20)
    url = f"http://127.0.0.1:{sink.ready['port']}/hook"
    config.write_text(config.read_text().replace("HOOK_URL", url), encoding="utf-8")
    argv = [sys.executable, "-m", "kzprobe", "--log-level", "debug", "run", "--config",
            str(config)]
    proc = services.spawn(lab.names.client, f"{tag}-daemon", argv, lab.workdir,
                          stderr_marker='"daemon_ready"')
    try:
        proc.wait_ready(60)
        yield LabDaemon(proc, sink, out, hooks)
    finally:
        proc.stop(grace=30.0)
        sink.stop()
