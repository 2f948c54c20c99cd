"""``kzprobe_network_state{state}``: one series per state, 1 for the confirmed one."""

from __future__ import annotations

from prometheus_client import generate_latest

from kzprobe.network.state import STATES
from kzprobe.ops.metrics import Metrics, Reading


def _reading() -> Reading:
    return Reading(in_flight=0, queue_depth=0, rate_limit_waits=0, records_written=0,
                   bytes_written=0, write_errors=0, segments_rotated=0, segments_compressed=0,
                   writer_blocked=False, targets=0, loop_lag=0.0, loop_lag_max=0.0)


def test_gauge_follows_the_state() -> None:
    metrics = Metrics(_reading)
    metrics.set_network_state("international_outage")
    metrics.set_network_state("full_outage")
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("kzprobe_network_state{")]
    assert len(lines) == len(STATES)
    assert 'kzprobe_network_state{state="full_outage"} 1.0' in lines
    assert 'kzprobe_network_state{state="international_outage"} 0.0' in lines
