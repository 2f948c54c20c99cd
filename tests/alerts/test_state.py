"""The pure state machine: records classified, changes confirmed with hysteresis."""

from __future__ import annotations

from typing import Any

import pytest

from kzprobe.alerts.state import Change, Tracker, classify
from tests.alerts.conftest import blocked, down, ok, record


def run(records: list[dict[str, Any]], confirm: int = 2) -> list[Change]:
    tracker = Tracker(confirm)
    changes = []
    for index, rec in enumerate(records):
        obs = classify(rec)
        change = tracker.observe(obs, float(index)) if obs is not None else None
        if change is not None:
            changes.append(change)
    return changes


def kinds(changes: list[Change]) -> list[str]:
    return [c.kind for c in changes]


class TestClassify:
    def test_states(self) -> None:
        """ok, blocked with sorted codes, down, unknown, as SPEC16 defines them."""
        assert classify(ok()).state == "ok"  # type: ignore[union-attr]
        obs = classify(blocked(codes=("tls.timeout", "dns.bogon")))
        assert obs is not None and obs.state == "blocked"
        assert obs.codes == ("dns.bogon", "tls.timeout")
        assert classify(down()).state == "down"  # type: ignore[union-attr]
        assert classify(record(blocking=None, accessible=None)).state == "unknown"  # type: ignore[union-attr]

    def test_self_proving_code_without_control_is_blocked(self) -> None:
        """blocking None but a code such as dns.bogon: blocked, not unknown."""
        obs = classify(record(blocking=None, accessible=None, codes=("dns.bogon",)))
        assert obs is not None and obs.state == "blocked"

    def test_interrupted_and_outage_records_are_no_observation(self) -> None:
        """Cut short at shutdown, or explained by a network outage: nothing observed."""
        cut = record(test_keys={"http_experiment_failure": "interrupted"}, blocking=None)
        assert classify(cut) is None
        assert classify(blocked(x_outage=True)) is None
        assert classify({"input": "x"}) is None


class TestTracker:
    def test_flapping_raises_nothing(self) -> None:
        """One blocked measurement between OK ones raises no event with confirm = 2."""
        assert run([ok(), ok(), blocked(), ok(), ok(), blocked(), ok()]) == []

    def test_blocked_unblocked_blocked(self) -> None:
        """A target that flips blocked -> ok -> blocked gives exactly those three events."""
        changes = run([ok(), ok(), blocked(), blocked(), blocked(), ok(), ok(), blocked(),
                       blocked()])
        assert kinds(changes) == ["blocked", "unblocked", "blocked"]

    def test_at_and_evidence_are_the_deciding_records(self) -> None:
        """``at`` is the first record in the new state; evidence names the deciding ones."""
        first, second = blocked(start="2026-12-07 14:05:00"), blocked()
        (change,) = run([ok(), ok(), first, second])
        assert change.at == "2026-12-07 14:05:00"
        assert [ref.uid for ref in change.evidence] == [first["x_measurement_uid"],
                                                        second["x_measurement_uid"]]
        assert change.frm is not None and change.frm.state == "ok"
        assert change.to.codes == ("tls.timeout",)

    def test_mechanism_change_while_blocked(self) -> None:
        """tls.timeout -> tls.mitm while blocked is its own change, once confirmed."""
        changes = run([blocked(), blocked(), blocked(codes=("tls.mitm",)), blocked(),
                       blocked(codes=("tls.mitm",)), blocked(codes=("tls.mitm",))])
        assert kinds(changes) == ["blocked", "mechanism_changed"]
        assert changes[1].frm is not None and changes[1].frm.codes == ("tls.timeout",)
        assert changes[1].to.codes == ("tls.mitm",)

    def test_codes_that_vary_still_confirm_a_block(self) -> None:
        """From ok, a block whose codes differ between sweeps is still confirmed."""
        changes = run([ok(), ok(), blocked(codes=("tcp.reset",)), blocked(codes=("tls.reset",))])
        assert kinds(changes) == ["blocked"]

    def test_down_and_up(self) -> None:
        """The site's own failure is ``down``; back to ok is ``up``; neither is a block."""
        assert kinds(run([ok(), ok(), down(), down(), ok(), ok()])) == ["down", "up"]

    def test_first_seen(self) -> None:
        """First confirmed blocked raises ``blocked``; first ok or down raises nothing."""
        assert kinds(run([blocked(), blocked()])) == ["blocked"]
        assert run([ok(), ok()]) == []
        assert run([down(), down()]) == []

    def test_unknown_never_alarms_and_does_not_break_a_streak(self) -> None:
        """Unknown records raise nothing, even many; between two blocked they confirm it."""
        unknown = record(blocking=None, accessible=None)
        assert run([ok(), ok(), *[dict(unknown) for _ in range(10)], ok()]) == []
        changes = run([ok(), ok(), blocked(), dict(unknown), blocked()])
        assert kinds(changes) == ["blocked"]

    @pytest.mark.parametrize("confirm", [1, 3])
    def test_confirm_counts_sweeps(self, confirm: int) -> None:
        """A change needs exactly ``confirm`` agreeing observations."""
        assert run([ok(), *[blocked() for _ in range(confirm - 1)]], confirm) == []
        assert len(run([ok(), *[blocked() for _ in range(confirm)]], confirm)) == 1

    def test_targets_are_keyed_by_input_and_network(self) -> None:
        """The same input on two networks is two targets."""
        changes = run([blocked(asn="AS1"), blocked(asn="AS2"), blocked(asn="AS1")])
        assert [(c.to.probe_asn, c.kind) for c in changes] == [("AS1", "blocked")]

    def test_shown_state_and_forgetting(self) -> None:
        """Metrics show the confirmed state; stale targets are forgotten, the rest capped."""
        tracker = Tracker(2)
        for now, rec in enumerate([blocked("a"), blocked("a"), ok("b"), ok("b")]):
            obs = classify(rec)
            assert obs is not None
            tracker.observe(obs, float(now))
        assert sorted(tracker.shown()) == [("a", "watch", "blocked"), ("b", "watch", "ok")]
        assert tracker.forget(older_than=2.0, keep=10) == 1  # "a" last seen at 1
        assert tracker.forget(older_than=0.0, keep=0) == 1
        assert tracker.entries == {}
