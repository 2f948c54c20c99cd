"""Telling a shutdown from a block: connectivity anchors and the network state (issue 17).

* :mod:`.state`: the pure state machine (``online``, ``international_outage``,
  ``full_outage``, ``dns_outage``, ``control_unreachable``, ``degraded``) with hysteresis.
* :mod:`.checks`: an anchor's record -> its check; the resolvers' check from the lookups.
* :mod:`.flag`: ``flag_record``: ``x_network_state``, ``x_network_check``, ``x_outage``.
* :mod:`.events`: a confirmed change -> the event-log object (kinds outage/recovered/degraded).
* :mod:`.monitor`: :class:`NetworkMonitor` (anchors every interval and on demand) and
  :class:`HelperProbe` (is the control helper reachable?).

How to wire it into the daemon (``kzprobe/service.py``, ``kzprobe/ops/sweeps.py``)::

    helper = HelperProbe(config.control.helper_urls, timeout=config.timeouts.control,
                         ssl_context=engine.resources.context.verify_context)
    monitor = NetworkMonitor(config, engine.measure,
                             helper=helper if config.control.helpers else None,
                             on_record=writer_emit,            # anchor records, group "anchors"
                             on_transition=on_network_change)  # -> events + notifiers
    tasks.add(asyncio.create_task(monitor.run()))              # every [network] interval
    metrics.set_network_state(monitor.state)                   # and again after each change

    # each sweep:
    snap = await monitor.check_now()        # right before it; settles a pending change
    rate = limits.rate * snap.rate_factor   # [network] outage_rate during an outage
    # each finished target record, before it is emitted:
    monitor.flag(record)                    # x_network_state / x_network_check / x_outage
    # recovery: ``await monitor.wait_online()`` (or ``wait_change()``) wakes the scheduler,
    # which starts a full sweep at once when the state leaves an outage.

    async def on_network_change(change):   # numbered and delivered by the alerts service
        await alerts.emit([network_event(change, probe=config.probe, probe_id=probe_id)])
        metrics.set_network_state(change.to_state)

    # shutdown: monitor.stop(); await the run task; await helper.aclose()

``monitor.flag`` uses the confirmed state at the time the record finished; a failure an
outage explains is judged by that outage while it waits for confirmation, or when the record
began before the way back was first seen (the edges of an outage). Without
``[network] anchors`` the monitor is disabled (``enabled`` False, state ``online``, no I/O).
"""

from __future__ import annotations

from kzprobe.network.events import network_event
from kzprobe.network.flag import flag_record
from kzprobe.network.monitor import HelperProbe, NetworkMonitor, NetworkSnapshot
from kzprobe.network.state import (
    CONTROL_UNREACHABLE,
    DEGRADED,
    DNS_OUTAGE,
    FULL_OUTAGE,
    INTERNATIONAL_OUTAGE,
    ONLINE,
    OUTAGES,
    STATES,
    AnchorCheck,
    CheckRound,
    NetworkStateMachine,
    Transition,
)

__all__ = [
    "CONTROL_UNREACHABLE", "DEGRADED", "DNS_OUTAGE", "FULL_OUTAGE", "INTERNATIONAL_OUTAGE",
    "ONLINE", "OUTAGES", "STATES", "AnchorCheck", "CheckRound", "HelperProbe",
    "NetworkMonitor", "NetworkSnapshot", "NetworkStateMachine", "Transition", "flag_record",
    "network_event",
]
