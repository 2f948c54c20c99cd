"""Runs a NetworkMonitor alone, as the daemon would, for the netns lab tests.

``python tests/network/lab_runner.py CONFIG SECONDS`` (in the lab's client namespace): builds
the engine from CONFIG, runs the monitor every ``[network] interval`` for at most SECONDS
(or until stdin closes), and prints one JSON line per confirmed change (``change``) and
per round (``round``), flushed, for the test to follow.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from kzprobe.config import load_config
from kzprobe.engine import build_engine
from kzprobe.network import HelperProbe, NetworkMonitor, Transition


def say(**fields: Any) -> None:
    print(json.dumps({"t": round(time.monotonic(), 2), **fields}), flush=True)


async def main(config_path: Path, seconds: float) -> None:
    config = load_config(config_path).config
    engine = build_engine(config)
    await engine.start()
    helper = HelperProbe(config.control.helper_urls, timeout=config.timeouts.control,
                         ssl_context=engine.resources.context.verify_context)

    async def on_change(change: Transition) -> None:
        say(type="change", kind=change.kind, frm=change.from_state, to=change.to_state,
            check=change.check_id, down=[c.anchor for c in change.evidence if not c.ok],
            slow=list(change.slow))

    async def on_record(record: dict[str, Any]) -> None:
        say(type="record", input=record["input"], state=record["x_network_state"],
            outage=record.get("x_outage", False))

    monitor = NetworkMonitor(config, engine.measure, helper=helper if config.control.helpers
                             else None, on_record=on_record, on_transition=on_change)
    original = monitor.machine.observe

    def observe(round_: Any) -> Transition | None:
        change = original(round_)
        say(type="round", raw=monitor.machine.last_raw, state=monitor.state,
            failed=[c.anchor for c in round_.checks if not c.ok])
        return change

    monitor.machine.observe = observe  # type: ignore[method-assign]
    say(type="ready", state=(await monitor.check_now()).state)
    task = asyncio.create_task(monitor.run())
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.wait([task, stdin_closed], timeout=seconds,
                       return_when=asyncio.FIRST_COMPLETED)
    monitor.stop()
    await asyncio.wait_for(task, 30)
    await helper.aclose()
    await engine.aclose()
    say(type="stopped")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2])))
