"""The control protocol over a shaped path: the router paces both links with ``tc tbf``.

On veths a few-KB message crosses in one piece; on a real path it arrives as segments over
time. With the router's links at 8 Mbit/s and the sites' realistic headers (~3 KB, so the
helper's THResponse is several segments), a probe that read one chunk of the control
response recorded ``control_failure: json_parse_error`` and a null verdict for most
scenarios. Here every scenario's control must succeed and its verdict be the one the
unshaped lab gives (tests/lab/test_lab_measure.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import shaping
from .lab import Lab
from .records import keys
from .test_lab_measure import measure_ready  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.lab

# (site key, scheme, scenario, blocking, accessible): verdicts as in test_lab_measure.py.
CASES: list[tuple[str, str, str | None, Any, Any]] = [
    ("open", "https", None, False, True),
    ("open", "http", None, False, True),
    ("dns_nx", "https", "dns_nxdomain", "dns", False),
    ("syn_reject", "https", "syn_reject", "tcp_ip", False),
    ("tls_rst", "https", "tls_rst", "http-failure", False),
    ("http_rst", "http", "http_rst", "http-failure", False),
    ("http_diff", "http", "http_diff", "http-diff", False),
]


@contextlib.contextmanager
def _applied(lab: Lab, scenario: str | None) -> Iterator[None]:
    if scenario is None:
        yield
    else:
        with lab.scenario(scenario):
            yield


@pytest.mark.parametrize(("key", "scheme", "scenario", "blocking", "accessible"), CASES,
                         ids=[f"{c[2] or c[0]}-{c[1]}" for c in CASES])
def test_control_succeeds_over_a_shaped_path(
        lab: Lab, tmp_path: Path, measure_ready: None,  # noqa: F811
        key: str, scheme: str, scenario: str | None, blocking: Any, accessible: Any) -> None:
    """Control and verdict survive a paced path; the tbf counters prove it was paced."""
    if lab.control_url is None:
        pytest.skip(f"no control helper in the lab: {lab.control_missing}")
    config = lab.write_config(tmp_path)
    url = lab.url(key, scheme)
    with shaping.shaped(lab) as counters, _applied(lab, scenario):
        records = lab.measure(url, config)
        held = counters()
    assert len(records) == 1 and records[0]["input"] == url
    tk = keys(records[0])
    assert tk["control_failure"] is None, tk["control_failure"]
    assert tk["x_control_helper"] == lab.control_url
    assert tk["blocking"] is not None and tk["accessible"] is not None
    assert (tk["blocking"], tk["accessible"]) == (blocking, accessible)
    down, up = (held[dev] for dev in shaping.devices(lab))
    assert up.packets > 0 and down.packets > 0  # both directions went through the qdiscs
    assert down.overlimits > 0  # and tbf held packets back: the path was paced


def test_shaping_really_paces_and_is_removed(lab: Lab) -> None:
    """A 2 MiB page at 16 Mbit/s takes over a second (unshaped: a fraction of one); after
    the context, no tbf is left on the router."""
    url = lab.url("large", "http")

    def fetch() -> float:
        started = time.monotonic()
        result = lab.raw("http", url, timeout=10.0)
        assert result["status"] == 200 and result["body_len"] == 2 * 1024 * 1024
        return time.monotonic() - started

    unshaped = fetch()
    with shaping.shaped(lab, rate="16mbit"):
        paced = fetch()
    assert paced >= 2 * 1024 * 1024 * 8 / 16e6 * 0.9, (unshaped, paced)
    assert paced > unshaped + 0.5, (unshaped, paced)
    assert shaping.stats(lab) == {}
    assert fetch() < paced  # and the path is fast again
