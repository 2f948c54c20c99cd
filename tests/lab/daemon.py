"""A long-lived ``kzprobe run`` in the client namespace, watching one lab site, with a webhook
receiver beside it (alerts tests and the detection-latency benchmark).

:func:`watching` writes the config (the lab defaults, no default targets, one
``[[targets.groups]]`` named ``watch``, ``[alerts]`` with one JSON webhook), starts the
receiver (:mod:`.webhook_receiver`, on the client namespace's 127.0.0.1) and the daemon, both
as pid-tracked :class:`~.services.Service`\\ s registered with the lab (so ``Lab.close``
stops them if a test dies), and stops both at the end. :class:`Watch` reads the daemon's
JSON log, the receiver's POSTs and the event log, each wait bounded and failing with the
daemon's log tail.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lab import Lab
from .labdaemon import whole_lines
from .netns import LabError
from .services import Service, spawn

RECEIVER = Path(__file__).with_name("webhook_receiver.py")
GROUP = "watch"
Post = dict[str, Any]


@dataclass(slots=True)
class Watch:
    """The running daemon and receiver of one :func:`watching` block."""

    daemon: Service
    receiver: Service
    posts_path: Path
    out_dir: Path

    # -- the daemon's log

    def log(self, name: str, group: str | None = GROUP) -> list[dict[str, Any]]:
        """The daemon's JSON log lines called ``name`` (of ``group``'s sweeps, if given)."""
        found = []
        for line in self.daemon.stderr.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (isinstance(entry, dict) and entry.get("event") == name
                    and (group is None or entry.get("group", group) == group)):
                found.append(entry)
        return found

    def sweeps(self) -> int:
        """Sweeps of the watch group finished so far."""
        return len(self.log("sweep_finished"))

    def wait_sweeps(self, count: int, timeout: float) -> None:
        """Until ``count`` watch sweeps have finished."""
        self._until(lambda: self.sweeps() >= count, timeout, f"{count} sweeps")

    def next_sweep(self, timeout: float) -> None:
        """Until one more watch sweep has finished (a quiet moment: nothing in flight)."""
        self.wait_sweeps(self.sweeps() + 1, timeout)

    # -- the receiver and the event log

    def posts(self) -> list[Post]:
        if not self.posts_path.exists():
            return []
        return [json.loads(line) for line in whole_lines(self.posts_path) if line]

    def wait_post(self, match: Callable[[Post], bool], timeout: float, after: int = 0
                  ) -> Post:
        """The first POST from index ``after`` on that ``match``\\ es, within ``timeout``."""
        found: list[Post] = []

        def seen() -> bool:
            found[:] = [p for p in self.posts()[after:] if match(p)]
            return bool(found)

        self._until(seen, timeout, "the webhook POST")
        return found[0]

    def events(self) -> list[dict[str, Any]]:
        """Every event in ``events-*.ndjson``, in file order."""
        lines: list[str] = []
        for path in sorted(self.out_dir.glob("events-*.ndjson")):
            lines += whole_lines(path)
        return [json.loads(line) for line in lines if line]

    def _until(self, ok: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if not self.daemon.alive():
                raise LabError(f"kzprobe run exited rc={self.daemon.proc.returncode} "
                               f"waiting for {what}:\n{self.daemon.log_tail(4000)}")
            if time.monotonic() > deadline:
                raise LabError(f"no {what} within {timeout}s; daemon log:\n"
                               f"{self.daemon.log_tail(4000)}\nposts: {self.posts()[-5:]}")
            time.sleep(0.05)


def watch_config(lab: Lab, workdir: Path, url: str, *, interval: float, webhook: str,
                 confirm: int = 2, retries: int = 0, jitter: float = 0.0) -> Path:
    """The lab's client config with ``url`` alone in the ``watch`` group."""
    config = lab.write_config(
        workdir, targets={"urls": []}, schedule={"interval": 3600.0, "jitter": jitter},
        service={"metrics_listen": "", "shutdown_grace": 5.0},
        analysis={"retries": retries})
    with config.open("a", encoding="utf-8") as out:
        out.write(f"[alerts]\nconfirm = {confirm}\n"
                  f"webhooks = [{{ url = {json.dumps(webhook)}, format = \"json\" }}]\n\n"
                  f"[[targets.groups]]\nname = \"{GROUP}\"\ninterval = {float(interval)}\n"
                  f"urls = [{json.dumps(url)}]\n")
    return config


def _start(lab: Lab, service: Service, timeout: float) -> Service:
    lab.services[service.name] = service  # Lab.close stops it should the caller die
    service.wait_ready(timeout)
    return service


def _stop(lab: Lab, service: Service | None, grace: float) -> None:
    if service is not None:
        service.stop(grace=grace)
        lab.services.pop(service.name, None)


@contextlib.contextmanager
def watching(lab: Lab, workdir: Path, url: str, *, interval: float, confirm: int = 2,
             retries: int = 0, jitter: float = 0.0) -> Iterator[Watch]:
    """Run the receiver and ``kzprobe run`` watching ``url``; stop both afterwards."""
    posts_path = workdir / "posts.ndjson"
    receiver: Service | None = None
    daemon: Service | None = None
    try:
        receiver = _start(lab, spawn(lab.names.client, "alerts-receiver",
                                     [sys.executable, str(RECEIVER), str(posts_path)],
                                     workdir), timeout=30.0)
        webhook = f"http://127.0.0.1:{receiver.ready['port']}/kzprobe"
        config = watch_config(lab, workdir, url, interval=interval, webhook=webhook,
                              confirm=confirm, retries=retries, jitter=jitter)
        daemon = _start(lab, spawn(lab.names.client, "kzprobe-run",
                                   [sys.executable, "-m", "kzprobe", "run", "--config",
                                    str(config)], workdir, stderr_marker='"daemon_ready"'),
                        timeout=60.0)
        yield Watch(daemon, receiver, posts_path, workdir / "out")
    finally:
        _stop(lab, daemon, grace=30.0)
        _stop(lab, receiver, grace=5.0)


def stop_daemon(lab: Lab, watch: Watch, grace: float = 30.0) -> int | None:
    """SIGTERM the daemon and wait: its exit code (None if it had to be killed)."""
    watch.daemon.stop(grace=grace)
    lab.services.pop(watch.daemon.name, None)
    code = watch.daemon.proc.returncode
    return code if code is not None and code >= 0 else None


def utc_seconds(text: str) -> float:
    """``2026-12-07T14:05:00Z`` as a unix time."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
