"""The network state machine, from recorded anchor check results (no I/O)."""

from __future__ import annotations

import pytest

from kzprobe.config.model import NetworkConfig
from kzprobe.network.state import (
    CONTROL_UNREACHABLE,
    DEGRADED,
    DNS_OUTAGE,
    FULL_OUTAGE,
    INTERNATIONAL_OUTAGE,
    ONLINE,
    AnchorCheck,
    classify,
)

from .recorded import anchors, named_dns_down, rounds, run

UP = anchors()
FULL = anchors(dom=False, intl=False, helper=False, resolvers=False)
INTL = anchors(intl=False, helper=False)


class TestClassify:
    @pytest.mark.parametrize(("checks", "state"), [
        (UP, ONLINE),
        (FULL, FULL_OUTAGE),
        (INTL, INTERNATIONAL_OUTAGE),
        (named_dns_down(), DNS_OUTAGE),
        (anchors(helper=False), CONTROL_UNREACHABLE),
    ], ids=["online", "full", "international", "dns", "control"])
    def test_each_state(self, checks: tuple[AnchorCheck, ...], state: str) -> None:
        """Each anchor pattern names its state."""
        assert classify(checks) == state

    def test_one_lost_anchor_is_still_online(self) -> None:
        """One anchor of a scope failing (a lost packet) is not an outage of that scope."""
        assert classify(anchors(down=[INTL_ONE])) == ONLINE
        assert classify(anchors(down=["tls://kaspi.kz:443"])) == ONLINE

    def test_resolvers_answering_alone_keep_domestic_reach(self) -> None:
        """The ISP resolver answering while everything else is gone: international outage."""
        checks = anchors(dom=False, intl=False, helper=False, resolvers=True)
        assert classify(checks) == INTERNATIONAL_OUTAGE

    def test_helper_as_only_international_anchor(self) -> None:
        """Without other international anchors a lost helper cannot be called an outage."""
        checks = tuple(c for c in anchors(helper=False) if c.scope == "domestic"
                       or c.kind == "helper")
        assert classify(checks) == CONTROL_UNREACHABLE

    def test_dns_failures_are_not_path_evidence(self) -> None:
        """International anchors failing only at their lookup are no international outage."""
        checks = tuple(c for c in named_dns_down() if c.anchor != "tcp://1.1.1.1:443")
        checks = tuple(c if c.kind != "helper" else AnchorCheck(
            anchor=c.anchor, scope=c.scope, kind="helper", failure=None) for c in checks)
        # domestic by address up, international only named (failed at DNS) + the helper up
        assert classify(checks) == DNS_OUTAGE

    def test_slow_is_degraded(self) -> None:
        assert classify(UP, slow=["x"]) == DEGRADED


INTL_ONE = "tcp://1.1.1.1:443"


class TestHysteresis:
    def test_one_lost_round_changes_nothing(self) -> None:
        """A single round showing an outage between good ones: no event, state online."""
        machine, changes = run([UP, UP, FULL, UP, UP])
        assert changes == []
        assert machine.state == ONLINE

    def test_up_down_up_gives_exactly_two_transitions(self) -> None:
        """Hours of up/down/up compressed into rounds one second apart."""
        shapes = [UP] * 3 + [INTL] * 6 + [UP] * 4
        machine, changes = run(shapes)
        assert [(c.from_state, c.to_state, c.kind) for c in changes] == [
            (ONLINE, INTERNATIONAL_OUTAGE, "outage"),
            (INTERNATIONAL_OUTAGE, ONLINE, "recovered")]
        first, back = changes
        start = 1_000_000.0
        assert first.at == start + 3  # the first round in the outage, not the confirming one
        assert first.confirmed_at == start + 4 + 0.5
        assert back.at == start + 9
        assert machine.state == ONLINE

    def test_confirmed_by_the_second_round(self) -> None:
        """confirm = 2: the outage is confirmed by exactly the second agreeing round."""
        machine, changes = run([UP, FULL])
        assert changes == [] and machine.pending
        machine, changes = run([UP, FULL, FULL])
        assert [c.to_state for c in changes] == [FULL_OUTAGE]
        assert not machine.pending

    def test_flapping_every_round_never_confirms(self) -> None:
        """Alternating rounds never reach two in a row: no event either way."""
        _, changes = run([UP, FULL] * 10)
        assert changes == []

    def test_one_lucky_round_does_not_end_an_outage(self) -> None:
        machine, changes = run([FULL, FULL, UP, FULL, FULL, FULL])
        assert [c.to_state for c in changes] == [FULL_OUTAGE]
        assert machine.state == FULL_OUTAGE

    def test_partial_recovery_is_its_own_change(self) -> None:
        """Full outage, then domestic back (international still cut), then everything."""
        _, changes = run([FULL] * 2 + [INTL] * 2 + [UP] * 2)
        assert [(c.from_state, c.to_state) for c in changes] == [
            (ONLINE, FULL_OUTAGE), (FULL_OUTAGE, INTERNATIONAL_OUTAGE),
            (INTERNATIONAL_OUTAGE, ONLINE)]

    def test_candidate_restarts_when_rounds_disagree(self) -> None:
        """FULL then INTL: two non-online rounds that disagree confirm neither."""
        _, changes = run([UP, FULL, INTL, UP])
        assert changes == []

    def test_confirm_and_recover_counts_are_config(self) -> None:
        config = NetworkConfig(confirm=3, recover=1)
        _, changes = run([UP, FULL, FULL], config)
        assert changes == []
        _, changes = run([UP, FULL, FULL, FULL, UP], config)
        assert [c.to_state for c in changes] == [FULL_OUTAGE, ONLINE]

    def test_check_id_is_the_deciding_round(self) -> None:
        """check_id names the round that confirmed the state, then the latest agreeing one,
        never a round that disagreed."""
        from kzprobe.network.state import NetworkStateMachine
        machine = NetworkStateMachine(NetworkConfig())
        r = rounds(UP, FULL, FULL, UP)
        machine.observe(r[0])
        assert machine.check_id == r[0].check_id
        machine.observe(r[1])
        assert machine.check_id == r[0].check_id  # pending: still the last agreeing round
        change = machine.observe(r[2])
        assert change is not None and machine.check_id == r[2].check_id == change.check_id
        machine.observe(r[3])
        assert machine.check_id == r[2].check_id

    def test_evidence_is_the_confirming_round(self) -> None:
        _, changes = run([INTL, INTL])
        evidence = [c.evidence() for c in changes[0].evidence if not c.ok]
        assert {"anchor": "tcp://1.1.1.1:443", "scope": "international",
                "failure": "generic_timeout_error"} in evidence
        assert all(e["scope"] == "international" for e in evidence)


class TestDegraded:
    def test_slow_anchors_against_their_own_baseline(self) -> None:
        """Times 10x the baseline on every anchor, after a baseline: degraded, then back."""
        fast, slow = anchors(seconds=0.1), anchors(slow=2.0)
        _, changes = run([fast] * 4 + [slow] * 3 + [fast] * 2)
        assert [(c.kind, c.to_state) for c in changes] == [
            ("degraded", DEGRADED), ("recovered", ONLINE)]
        assert set(changes[0].slow) == {"tls://kaspi.kz:443", "tcp://195.210.46.195:53",
                                        "tcp://1.1.1.1:443", "tls://www.gstatic.com:443"}

    def test_no_baseline_no_degradation(self) -> None:
        """Slow from the first round: nothing to compare with (baseline_min_samples)."""
        _, changes = run([anchors(slow=2.0)] * 2 + [anchors(slow=2.0)] * 3)
        assert changes == []

    def test_small_absolute_change_is_noise(self) -> None:
        """5 ms -> 50 ms is 10x but below degraded_min_seconds."""
        _, changes = run([anchors(seconds=0.005)] * 4 + [anchors(seconds=0.05)] * 3)
        assert changes == []

    def test_throttling_does_not_become_the_baseline(self) -> None:
        """Long throttling stays degraded: slow rounds are not learnt."""
        config = NetworkConfig(baseline_samples=4)
        machine, changes = run([anchors(seconds=0.1)] * 4 + [anchors(slow=2.0)] * 30, config)
        assert [c.to_state for c in changes] == [DEGRADED]
        assert machine.state == DEGRADED

    def test_one_slow_anchor_is_not_the_network(self) -> None:
        """Only a minority slow: one slow server, not network-wide throttling."""
        machine, changes = run([anchors(seconds=0.1)] * 4 + [_one_slow()] * 4)
        assert changes == [] and machine.state == ONLINE


def _one_slow() -> tuple[AnchorCheck, ...]:
    return tuple(AnchorCheck(anchor=c.anchor, scope=c.scope, kind=c.kind, failure=c.failure,
                             seconds=3.0 if c.anchor == INTL_ONE else c.seconds)
                 for c in anchors(seconds=0.1))


class TestResume:
    """A restart during an outage: the machine starts from the event log's last state."""

    def test_an_outage_that_goes_on_is_not_announced_again_and_its_end_is(self) -> None:
        machine, _ = run([])
        assert machine.resume(INTERNATIONAL_OUTAGE, since=900_000.0)
        changes = [c for r in rounds(INTL, INTL, INTL, UP, UP, UP)
                   if (c := machine.observe(r)) is not None]
        assert [(c.from_state, c.to_state) for c in changes] == [
            (INTERNATIONAL_OUTAGE, ONLINE)]
        assert machine.state == ONLINE

    def test_resumed_state_and_start_time_show_until_a_change(self) -> None:
        machine, _ = run([])
        machine.resume(FULL_OUTAGE, since=900_000.0)
        assert machine.observe(rounds(FULL)[0]) is None
        assert (machine.state, machine.since) == (FULL_OUTAGE, 900_000.0)

    def test_an_unknown_state_is_ignored(self) -> None:
        machine, _ = run([])
        assert not machine.resume("on_fire", since=None)
        assert machine.state == ONLINE
