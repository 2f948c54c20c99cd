"""The daemon's side of the network monitor (:mod:`kzprobe.network`).

:class:`NetworkWatch` runs the anchors on the running engine, writes their records like any
other (group ``anchors``), stamps every record with the state it was measured in, turns a
confirmed change into an event for the alert log and notifiers and into the
``kzprobe_network_state`` gauge, slows the sweeps to ``[network] outage_rate`` during an
outage, and makes every group due at once when the outage ends, so the first sweep after
recovery is a full one. Without ``[network] anchors`` it does nothing and records carry no
network state: the daemon cannot tell, so it does not claim ``online``.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from kzprobe.alerts import journal
from kzprobe.alerts.core import Alerts
from kzprobe.config.model import ProbeConfig
from kzprobe.network import HelperProbe, NetworkMonitor, Transition, network_event
from kzprobe.network.state import ONLINE, OUTAGES
from kzprobe.ops.readings import Readings, Running
from kzprobe.targets import Target
from kzprobe.verdict.locate import UNSET

log = structlog.get_logger("kzprobe.ops.outages")

Write = Callable[[dict[str, Any]], Awaitable[None]]


def _unix(stamp: Any) -> float | None:
    """An event's ``at`` (``2026-12-07T14:05:00Z``) as Unix time; None if it is not one."""
    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


class NetworkWatch:
    """Anchors, network state and what an outage changes in the daemon."""

    def __init__(self, running: Running, readings: Readings, write: Write,
                 alerts: Callable[[], Alerts | None], on_recovery: Callable[[], None]) -> None:
        self.running = running
        self.readings = readings
        self.alerts = alerts
        self.on_recovery = on_recovery
        config, engine = running.config, running.engine
        assert engine is not None  # made once the daemon's first engine has started
        # Verified with the probe's trust store (an interception box answering for a blocked
        # helper does not count), over HTTP/1.1 (what aiohttp speaks).
        context = engine.resources.context.http11_context
        self.helper = (HelperProbe(config.control.helper_urls, timeout=config.timeouts.control,
                                   ssl_context=context)
                       if config.control.helpers else None)
        self.monitor = NetworkMonitor(config, self._measure, helper=self.helper,
                                      on_record=write, on_transition=self._changed)
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.monitor.enabled

    async def resume(self) -> None:
        """The state the event log last confirmed, before a restart: an outage that is
        still on when the daemon comes back is not a second ``outage`` event."""
        if not self.enabled:
            return
        directory = self.running.config.output.dir
        try:
            event = await asyncio.to_thread(journal.last_event, directory, "network")
        except OSError as exc:
            log.warning("network_state_not_resumed", error=str(exc)[:200])
            return
        to = event.get("to") if event is not None else None
        state = to.get("state") if isinstance(to, dict) else None
        if not isinstance(state, str) or state == ONLINE:
            return
        if self.monitor.machine.resume(state, _unix(event.get("at") if event else None)):
            log.info("network_state_resumed", state=state, since=event and event.get("at"),
                     check=event and event.get("check"))

    def start(self) -> None:
        if not self.enabled:
            return
        self.readings.metrics.set_network_state(self.monitor.state)
        self._task = asyncio.create_task(self.monitor.run(), name="kzprobe-network")

    def flag(self, record: dict[str, Any]) -> None:
        """``x_network_state``, ``x_network_check`` (and ``x_outage`` where the outage
        explains the failure) on a target's record, before it is written."""
        if self.enabled:
            self.monitor.flag(record)

    async def before_sweep(self) -> None:
        """Right before a sweep: check the anchors (settling a pending change)."""
        if self.enabled:
            await self.monitor.check_now()
            self.apply_rate()

    def apply_rate(self) -> None:
        """The running engine's sweep rate for the current state (after a reload too)."""
        engine = self.running.engine
        if engine is not None:
            engine.set_rate_factor(self.monitor.snapshot().rate_factor)

    async def _measure(self, target: Target) -> dict[str, Any]:
        engine = self.running.engine
        assert engine is not None  # anchors are measured only once the daemon runs
        return await engine.measure(target)

    async def _changed(self, change: Transition) -> None:
        self.readings.metrics.set_network_state(change.to_state)
        self.apply_rate()
        config = self.running.config
        alerts = self.alerts()
        if alerts is not None:
            await alerts.emit([network_event(change, probe=self._located(config.probe),
                                             probe_id=config.probe.id)])
        if change.from_state in OUTAGES and change.to_state not in OUTAGES:
            log.info("network_recovered_full_sweep", state=change.to_state)
            self.on_recovery()

    def _located(self, probe: ProbeConfig) -> ProbeConfig:
        """The probe as its records name it: where ``[probe]`` leaves a field at its default,
        the network ``[geoip]`` detected (else an outage event says AS0 while the records
        it explains say the real ASN)."""
        engine = self.running.engine
        location = engine.pipeline.locator.location if engine is not None else None
        found = location.fields() if location is not None else {}

        def pick(name: str, key: str) -> str:
            mine: str = getattr(probe, name)
            return found.get(key, mine) if mine == UNSET[key] else mine

        return dataclasses.replace(probe, asn=pick("asn", "probe_asn"), cc=pick("cc", "probe_cc"),
                                   network_name=pick("network_name", "probe_network_name"))

    async def aclose(self) -> None:
        self.monitor.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.helper is not None:
            await self.helper.aclose()
