"""An anchor's record -> its check, and the resolvers' check, from recorded shapes."""

from __future__ import annotations

import copy
from typing import Any

from kzprobe.config import Config
from kzprobe.network.checks import anchor_check, path_seconds, resolvers_check
from kzprobe.verdict.analyzer import Analyzer
from tests.verdict.analysis import scenarios as sc


def endpoint(reachable: bool, failure: str | None = None, operation: str | None = None,
             **keys: Any) -> dict[str, Any]:
    return {"test_keys": {"reachable": reachable, "failure": failure,
                          "failed_operation": operation, **keys}}


def test_endpoint_reached_and_timed() -> None:
    """A reachable tcp:// anchor: ok, timed by its successful connect."""
    record = endpoint(True, tcp_connect=[
        {"ip": "1.1.1.1", "port": 443, "status": {"success": False, "failure": "x"},
         "t0": 0.0, "t": 1.5},
        {"ip": "1.0.0.1", "port": 443, "status": {"success": True, "failure": None},
         "t0": 0.1, "t": 0.3}])
    check = anchor_check("tcp://one:443", "international", record)
    assert check.ok and check.seconds is not None and abs(check.seconds - 0.2) < 1e-9


def test_endpoint_lookup_failure_is_no_path_evidence() -> None:
    check = anchor_check("tls://a.kz:443", "domestic",
                         endpoint(False, "generic_timeout_error", "resolve"))
    assert not check.ok and check.dns_failed and check.seconds is None
    check = anchor_check("tls://a.kz:443", "domestic",
                         endpoint(False, "generic_timeout_error", "tcp_connect"))
    assert not check.ok and not check.dns_failed


def test_web_record_times_connect_handshake_first_byte_and_body() -> None:
    """The throttled scenario: a 4 s handshake counts, with connect, ttfb and body."""
    keys = sc.throttled("handshake").keys
    seconds = path_seconds(keys)
    assert seconds is not None and seconds > 4.0
    assert anchor_check(sc.URL, "domestic", {"test_keys": keys}).ok


def judged(scenario: sc.Scenario) -> dict[str, Any]:
    """The scenario's keys with the verdict applied, as the engine's record holds them."""
    keys = copy.deepcopy(scenario.keys)
    Analyzer(Config()).apply(keys, scenario.url)
    return {"test_keys": keys}


def test_web_failures() -> None:
    down = anchor_check(sc.URL, "international",
                        judged(sc.tcp_failure("generic_timeout_error", "tcp.timeout")))
    assert down.failure == "generic_timeout_error" and not down.dns_failed
    nodns = anchor_check(sc.URL, "international",
                         judged(sc.dns_failure("generic_timeout_error", "dns.timeout")))
    assert nodns.failure == "generic_timeout_error" and nodns.dns_failed


def test_resolvers_answer_with_any_reply() -> None:
    """NXDOMAIN is an answer (the resolver works); timeouts everywhere are not."""
    gone = {"test_keys": sc.name_gone_everywhere().keys}
    silent = {"test_keys": sc.dns_failure("generic_timeout_error", "dns.timeout").keys}
    answered = resolvers_check([silent, gone], "domestic")
    assert answered is not None and answered.ok and answered.kind == "resolvers"
    dead = resolvers_check([silent, silent], "international")
    assert dead is not None and dead.failure == "generic_timeout_error"
    assert dead.scope == "international"
    assert resolvers_check([endpoint(True)], "domestic") is None  # no lookup: unknown
