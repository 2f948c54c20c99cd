"""Flagging records with the network state, from recorded measurements judged by the real
analysis (tests/verdict/analysis/scenarios.py): what an outage explains, what it cannot."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kzprobe.config import Config
from kzprobe.network.flag import flag_record
from kzprobe.network.state import (
    CONTROL_UNREACHABLE,
    DEGRADED,
    DNS_OUTAGE,
    FULL_OUTAGE,
    INTERNATIONAL_OUTAGE,
    ONLINE,
)
from kzprobe.verdict.analyzer import Analyzer
from tests.verdict.analysis import scenarios as sc


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(Config())


def judged(analyzer: Analyzer, scenario: sc.Scenario) -> dict[str, Any]:
    """The scenario as a finished record: its observations with the real verdict applied."""
    keys = copy.deepcopy(scenario.keys)
    analyzer.apply(keys, scenario.url)
    return {"input": scenario.url, "test_keys": keys}


SITE_FAILURES = [
    lambda: sc.tcp_failure("generic_timeout_error", "tcp.timeout"),
    lambda: sc.tcp_failure("connection_refused", "tcp.refused"),
    lambda: sc.http_failure("connection_reset", "http.reset"),
    lambda: sc.tls_timeout_without_control("generic_timeout_error"),
    sc.site_down_everywhere,
]


class TestOutageExplains:
    @pytest.mark.parametrize("build", SITE_FAILURES)
    @pytest.mark.parametrize("state", [FULL_OUTAGE, INTERNATIONAL_OUTAGE])
    def test_path_failures_are_set_aside(self, analyzer: Analyzer, build: Any,
                                         state: str) -> None:
        """A connect/TLS/HTTP failure in a path outage: x_outage, no codes, no blocking,
        and what was dropped is kept."""
        record = judged(analyzer, build())
        before = copy.deepcopy(record["test_keys"])
        assert before["http_experiment_failure"] is not None
        flag_record(record, state, "c1")
        keys = record["test_keys"]
        assert record["x_outage"] is True
        assert record["x_network_state"] == state and record["x_network_check"] == "c1"
        assert keys["interference"] == [] and keys["blocking"] is None
        assert keys["accessible"] is None
        assert record["x_outage_dropped"] == {"interference": before["interference"],
                                              "blocking": before["blocking"],
                                              "accessible": before["accessible"]}

    def test_dns_outage_explains_lookups_only(self, analyzer: Analyzer) -> None:
        """A DNS outage explains a failed lookup, not a connect timeout to a resolved address."""
        lookup = judged(analyzer, sc.dns_failure("generic_timeout_error", "dns.timeout"))
        connect = judged(analyzer, sc.tcp_failure("generic_timeout_error", "tcp.timeout"))
        flag_record(lookup, DNS_OUTAGE, "c2")
        flag_record(connect, DNS_OUTAGE, "c2")
        assert lookup["x_outage"] is True and lookup["test_keys"]["interference"] == []
        assert "x_outage" not in connect
        assert connect["test_keys"]["interference"] == ["tcp.timeout"]

    @pytest.mark.parametrize("state", [ONLINE, CONTROL_UNREACHABLE, DEGRADED])
    def test_other_states_only_stamp(self, analyzer: Analyzer, state: str) -> None:
        """Online, a lost helper or a slow network explain nothing: the verdict stands."""
        record = judged(analyzer, sc.tcp_failure("connection_reset", "tcp.reset"))
        before = copy.deepcopy(record["test_keys"])
        flag_record(record, state, None)
        assert record["test_keys"] == before
        assert "x_outage" not in record and record["x_network_state"] == state

    def test_a_working_site_is_an_observation(self, analyzer: Analyzer) -> None:
        """A page that loaded during an international outage is not flagged: a domestic site
        reached, or a partial recovery, is exactly what outage sweeps are for."""
        record = judged(analyzer, sc.site_fine_https())
        flag_record(record, INTERNATIONAL_OUTAGE, "c3")
        assert "x_outage" not in record and record["test_keys"]["accessible"] is True


class TestSelfProvingEvidenceStays:
    @pytest.mark.parametrize(("build", "code"), [
        (sc.blockpage_body, "http.blockpage"),
        (sc.bogus_loopback_answer, "dns.bogon"),
        (sc.blockpage_ip_answer, "dns.blockpage"),
        (lambda: sc.mitm_qaznet(False), "tls.mitm"),
        (lambda: sc.tls_failure_confirmed("generic_timeout_error", "tls.timeout"),
         "tls.timeout"),
        (lambda: sc.tls_timeout_without_control(None), "tls.timeout"),
    ], ids=["blockpage", "bogon", "dns_blockpage", "known_mitm_ca", "sni_confirmed",
            "sni_confirmed_no_control"])
    def test_kept_in_a_full_outage(self, analyzer: Analyzer, build: Any, code: str) -> None:
        """Evidence no outage can produce keeps its code, and the record stays an
        observation (no x_outage): the alert tracker still sees the block."""
        record = judged(analyzer, build())
        assert code in record["test_keys"]["interference"]
        flag_record(record, FULL_OUTAGE, "c4")
        assert "x_outage" not in record
        assert code in record["test_keys"]["interference"]
        assert record["test_keys"]["blocking"] not in (None, False) or \
            record["test_keys"]["interference"]

    def test_unconfirmed_sni_timeout_is_dropped(self, analyzer: Analyzer) -> None:
        """A TLS timeout whose benign handshake failed too is what an outage looks like."""
        record = judged(analyzer, sc.tls_timeout_without_control("generic_timeout_error"))
        flag_record(record, FULL_OUTAGE, "c5")
        assert record["x_outage"] is True

    def test_unknown_authority_without_known_ca_is_dropped(self, analyzer: Analyzer) -> None:
        """tls.mitm from an unknown CA needs the control: not self-proving, so dropped."""
        record = judged(analyzer, sc.mitm_qaznet(True))
        record["test_keys"]["x_tls_mitm_known"] = None
        flag_record(record, INTERNATIONAL_OUTAGE, "c6")
        assert record["x_outage"] is True
        assert record["x_outage_dropped"]["interference"] == ["tls.mitm"]

    def test_mixed_codes_keep_only_the_proving_ones(self, analyzer: Analyzer) -> None:
        """A DNS lie (bogon) plus a connect timeout: the bogon stays, the timeout goes."""
        record = judged(analyzer, sc.bogus_loopback_answer())
        record["test_keys"]["interference"] = ["dns.bogon", "tcp.timeout"]
        flag_record(record, FULL_OUTAGE, "c7")
        assert record["test_keys"]["interference"] == ["dns.bogon"]
        assert record["x_outage_dropped"] == {"interference": ["tcp.timeout"]}
        assert "x_outage" not in record


def test_interrupted_records_are_left_alone() -> None:
    """A record cut short at shutdown is no observation either way: only stamped."""
    record = {"test_keys": {"http_experiment_failure": "interrupted", "interference": [],
                            "blocking": None}}
    flag_record(record, FULL_OUTAGE, "c8")
    assert "x_outage" not in record and record["x_network_state"] == FULL_OUTAGE
