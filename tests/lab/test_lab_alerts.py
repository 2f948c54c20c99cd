"""Alerts in the namespace lab, real packets: one ``kzprobe run`` watches an HTTPS site while
the router starts, stops and restarts resetting its SNI (issue 16).

The daemon runs in the client namespace with the lab's control helper, a ``watch`` group
swept every 1.5 s and ``[alerts] confirm = 2``; its JSON webhook is a receiver on the client
namespace's loopback. Each rule change happens right after a watch sweep finished, so no
measurement straddles it and the first record in the new state starts after it: that is
what makes ``at`` checkable against the moment the rule went in or out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .daemon import Post, Watch, stop_daemon, utc_seconds, watching
from .lab import Lab

pytestmark = pytest.mark.lab
# A sweep here takes under 0.1 s: 1.5 s leaves room to change a rule between two sweeps,
# and puts two consecutive records in different seconds (``at`` is checked to the second).
INTERVAL = 1.5
SETTLE = 60.0  # generous bound for one confirmed change (about 2 intervals on a quiet box)
MECHANISM = ["tls.reset"]  # the tls_rst scenario: RST on the ClientHello's SNI


def _is(kind: str) -> Callable[[Post], bool]:
    return lambda post: post["body"].get("kind") == kind


def _block(lab: Lab, watch: Watch, *, then_stop: bool = False
           ) -> tuple[tuple[float, Post], tuple[float, int]]:
    """Insert the SNI rule at a quiet moment (right after a sweep), wait for the ``blocked``
    POST and one more sweep under the rule, then remove it (or first stop the daemon):
    ((inserted, POST), (removed, POSTs so far))."""
    watch.next_sweep(timeout=30)
    already = len(watch.posts())
    inserted = time.time()
    with lab.scenario("tls_rst"):
        post = watch.wait_post(_is("blocked"), SETTLE, already)
        watch.next_sweep(timeout=30)  # still blocked: no second event
        if then_stop:
            assert stop_daemon(lab, watch) == 0, watch.daemon.log_tail(3000)
        removed, posts = time.time(), len(watch.posts())
    return (inserted, post), (removed, posts)


def _record_time(evidence: dict[str, Any]) -> float:
    return utc_seconds(str(evidence["measurement_start_time"]).replace(" ", "T") + "Z")


def _check_times(event: dict[str, Any], changed: float, received: float) -> None:
    """``at`` is the first record after the rule changed (the first of the ``confirm`` = 2
    deciding records, a sweep before the confirming one); confirmed before it was POSTed."""
    at, confirmed = utc_seconds(event["at"]), utc_seconds(event["confirmed_at"])
    assert math.floor(changed) <= at <= confirmed <= received, (changed, event, received)
    first, last = event["evidence"]
    assert at == _record_time(first) < _record_time(last) <= confirmed, event


def test_sni_reset_inserted_removed_inserted_raises_blocked_unblocked_blocked(
        lab: Lab, tmp_path: Path) -> None:
    url = lab.url("tls_rst")
    with watching(lab, tmp_path, url, interval=INTERVAL, confirm=2) as watch:
        watch.wait_sweeps(3, timeout=60)  # ok twice: confirmed, and a first state is no news
        assert watch.posts() == [] and watch.events() == []
        first, (removed, seen) = _block(lab, watch)
        unblocked_post = watch.wait_post(_is("unblocked"), SETTLE, seen)
        again, _ = _block(lab, watch, then_stop=True)
        events, posts = watch.events(), watch.posts()
    flips = [first, (removed, unblocked_post), again]
    assert [e["kind"] for e in events] == ["blocked", "unblocked", "blocked"], events
    assert [p["body"]["event_id"] for p in posts] == [e["event_id"] for e in events], posts
    assert all(p["idempotency_key"] == p["body"]["event_id"] for p in posts)
    for event, post, (changed, flip_post) in zip(events, posts, flips, strict=True):
        assert post == flip_post
        assert event == post["body"]  # the POSTed JSON is the event as written
        assert event["input"] == url and event["group"] == "watch"
        _check_times(event, changed, post["t"])
    blocked, unblocked, blocked_again = events
    for event in (blocked, blocked_again):
        assert event["from"] == {"state": "ok", "interference": []}
        assert event["to"] == {"state": "blocked", "interference": MECHANISM}
        assert event["sni_blocking_confirmed"] is True
        assert "(tls.reset, SNI confirmed)" in event["summary"]
    assert unblocked["from"] == {"state": "blocked", "interference": MECHANISM}
    assert unblocked["to"] == {"state": "ok", "interference": []}
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
