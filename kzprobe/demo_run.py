"""``kzprobe demo``: the real daemon (``kzprobe run``) on a simulated censored network.

The network (:class:`kzprobe.demo.DemoNetwork`) runs on loopback in this process, with the
control helper and an alert receiver (:class:`kzprobe.simnet.receiver.Receiver`: the
webhook and the heartbeat). One :class:`kzprobe.service.Daemon` sweeps it three times; the
demo learns that a sweep is over (its events written) from the daemon's heartbeat:

1. Every target; those found blocked become ``blocked`` events (``[alerts] confirm = 1``:
   one sweep confirms a change).
2. The ISP starts blocking one site by DNS and the international link is cut; the demo asks
   for the next sweep at once (as the daemon itself does on recovery) rather than an hour
   later. Before it, the daemon's anchors confirm the outage (an ``outage`` event); the
   outage explains the sweep's failures (``x_outage``: no verdict, no alarm).
3. The demo restores the link: the daemon confirms the recovery (``recovered``), sweeps every
   target at once and confirms the new block (one ``blocked`` event). The demo then stops it.

The summary goes to stdout (:mod:`kzprobe.demo_show`); the NDJSON, the event log and an HTML
report go to the output directory, which holds this run only: a previous demo's files are
removed first.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kzprobe.config import Config, parse_config
from kzprobe.demo import DemoNetwork
from kzprobe.demo_show import Shown, observed, show_first, show_later, show_the_rest
from kzprobe.errors import KzprobeError
from kzprobe.helper import start_helper
from kzprobe.network.monitor import ANCHORS_GROUP
from kzprobe.service import Daemon
from kzprobe.simnet.receiver import Receiver
from kzprobe.targets import Target, parse_target

__all__ = ["observed", "run_demo"]

CONFIG_NAME = "demo-config.toml"  # also marks a directory as the demo's own output
_OWN_FILES = ("kzprobe-*", "events-*.ndjson", "alerts-*.json", "report.html", CONFIG_NAME)
SWITCHED_SITE = "news.demo"  # the ISP starts blocking it by DNS after the first sweep
WEBHOOK, HEARTBEAT = "/alerts", "/heartbeat"
SWEEP_WAIT = 90.0  # seconds the demo waits for one sweep


def clear_previous(output: Path) -> int:
    """Make ``output`` this run's alone (a report over it then shows every site once):
    remove a previous demo's files, recognised by its config. A directory holding other
    files and no demo config is someone else's: refuse rather than mix or delete."""
    entries = list(output.iterdir())
    if not entries:
        return 0
    if not (output / CONFIG_NAME).is_file():
        raise KzprobeError(f"{output}: not empty and not a previous demo's output (no "
                           f"{CONFIG_NAME}); choose another --output")
    removed = 0
    for pattern in _OWN_FILES:
        for path in output.glob(pattern):
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


class DemoHelper:
    """The control helper, outside the censor; stopped by a cut, back on the same port."""

    def __init__(self, network: DemoNetwork) -> None:
        self.network = network
        self.port = 0
        self.url = ""
        self._runner: Any = None

    async def start(self) -> None:
        text = self.network.helper_config_toml(self.port)
        config = parse_config(tomllib.loads(text), where="demo helper").config
        self._runner, self.url = await start_helper(config)
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@dataclass
class Sweeps:
    """The records the daemon writes, by target sweep (in order) and input."""

    order: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    anchors: int = 0
    _ids: list[str] = field(default_factory=list)

    async def add(self, record: dict[str, Any]) -> None:
        notes = record.get("annotations") or {}
        if notes.get("kzprobe_group") == ANCHORS_GROUP:
            self.anchors += 1
            return
        sweep = str(notes.get("kzprobe_sweep"))
        if sweep not in self._ids:
            self._ids.append(sweep)
            self.order.append({})
        self.order[self._ids.index(sweep)][str(record["input"])] = record

    @property
    def records(self) -> int:
        return self.anchors + sum(len(sweep) for sweep in self.order)


@dataclass
class Story:
    """What the demo runs and where it writes."""

    network: DemoNetwork
    helper: DemoHelper
    receiver: Receiver
    output: Path
    out: TextIO
    sweeps: Sweeps = field(default_factory=Sweeps)

    def config(self) -> Config:
        text = self.network.config_toml(
            self.output, helper_url=self.helper.url, webhook_url=self.receiver.url(WEBHOOK),
            heartbeat_url=self.receiver.url(HEARTBEAT))
        (self.output / CONFIG_NAME).write_text(text, "utf-8")
        return parse_config(tomllib.loads(text), where="demo").config

    def targets(self) -> list[Target]:
        return [parse_target(t.url, category_code=t.category_code, origin="demo")
                for t in self.network.targets]


async def run_demo(output: Path, out: TextIO = sys.stdout) -> int:
    """Start the demo network, run the daemon over it, print what was found.

    ``output`` is an existing, absolute directory (the CLI prepares it).
    """
    removed = await asyncio.to_thread(clear_previous, output)
    async with DemoNetwork() as network, Receiver(network.receiver_host) as receiver:
        helper = DemoHelper(network)
        await helper.start()
        try:
            story = Story(network, helper, receiver, output, out)
            code = await _run(story)
        finally:
            await helper.stop()
    shown = Shown(story.sweeps.records, story.sweeps.anchors, receiver.received(WEBHOOK))
    await show_the_rest(shown, output, out, removed=removed)
    return code


async def _run(story: Story) -> int:
    """The daemon's three sweeps; it is stopped at the third one's heartbeat (or a failure)."""
    config = await asyncio.to_thread(story.config)
    daemon = Daemon(config, story.targets(), on_record=story.sweeps.add)
    running = asyncio.create_task(daemon.serve(once=False))
    failed = None
    try:
        await _heartbeat(story.receiver, 1, running)
        show_first(story.out, story.network.targets, story.sweeps.order)
        story.network.block_by_dns(SWITCHED_SITE)
        await story.helper.stop()
        await story.network.cut_international()
        daemon.sweeps.all_due_now()  # the next sweep now, not an [schedule] interval later
        await _heartbeat(story.receiver, 2, running)
        await story.helper.start()
        await story.network.restore_international()
        await _heartbeat(story.receiver, 3, running)  # the full sweep the recovery starts
    except (TimeoutError, KzprobeError) as exc:
        failed = str(exc) or "no heartbeat from the daemon in time"
    finally:
        if not running.done():
            daemon.request_stop()
        code = await running
    show_later(story.out, story.sweeps.order, SWITCHED_SITE)
    if failed is not None:
        story.out.write(f"\nkzprobe demo: the daemon did not finish its sweeps: {failed}\n")
        return code or 1
    return code


async def _heartbeat(receiver: Receiver, count: int, running: asyncio.Task[int]) -> None:
    """Wait (bounded) for the daemon's ``count``-th heartbeat: a sweep and its events done."""
    waiting = asyncio.ensure_future(receiver.wait_for(HEARTBEAT, count, SWEEP_WAIT))
    await asyncio.wait({waiting, running}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        raise KzprobeError("the daemon stopped before its sweep was over (a stop signal?)")
    waiting.result()
