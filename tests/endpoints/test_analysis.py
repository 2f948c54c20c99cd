"""kzprobe.verdict.analysis.endpoints: verdicts from hand-written test_keys (pure, no network)."""

from __future__ import annotations

from typing import Any

import pytest

from kzprobe.measure.registry import SPECS, kind_of
from kzprobe.verdict.analysis.endpoints import apply, judge


def _keys(failure: str | None, step: str | None, *, control: Any = None,
          control_failure: str | None = None, **extra: Any) -> dict[str, Any]:
    outcome = {"address": "192.0.2.1:443", "failure": failure, "failed_operation": step}
    return {"reachable": failure is None, "failure": failure, "failed_operation": step,
            "x_endpoint_results": [outcome], "control": control,
            "control_failure": control_failure, **extra}


WORKS = {"x_endpoint": {"reachable": True}, "tcp_connect": {}}
TCP_ONLY = {"tcp_connect": {"192.0.2.1:443": {"status": True, "failure": None}}}
DOWN = {"x_endpoint": {"reachable": False}, "tcp_connect": {}}


@pytest.mark.parametrize(("failure", "step", "control", "codes"), [
    ("connection_refused", "tcp_connect", TCP_ONLY, ["tcp.refused"]),
    ("generic_timeout_error", "tcp_connect", WORKS, ["tcp.timeout"]),
    ("connection_reset", "tcp_connect", None, []),
    ("connection_refused", "tcp_connect", DOWN, []),
    ("connection_reset", "tls_handshake", WORKS, ["tls.reset"]),
    ("eof_error", "tls_handshake", TCP_ONLY, []),  # a TCP control says nothing about TLS
    ("ssl_unknown_authority", "tls_handshake", WORKS, ["tls.mitm"]),
    ("generic_timeout_error", "openvpn_handshake", WORKS, ["openvpn.timeout"]),
    ("connection_refused", "stun_binding", WORKS, ["stun.refused"]),
    ("unknown_failure: ProtocolError: x", "tor_link", WORKS, ["tor.invalid"]),
    ("generic_timeout_error", "wireguard_handshake", TCP_ONLY, []),
    ("generic_timeout_error", "wireguard_handshake", DOWN, []),
])
def test_codes_need_a_control_that_worked(failure: str, step: str, control: Any,
                                          codes: list[str]) -> None:
    """Each failure maps to its code only when the control shows the endpoint works."""
    verdict = judge(_keys(failure, step, control=control))
    assert verdict.reachable is False and verdict.failure == failure
    assert list(verdict.codes) == codes


def test_a_failed_control_is_no_control() -> None:
    """control_failure set: the control's content is ignored."""
    keys = _keys("connection_reset", "tls_handshake", control=WORKS,
                 control_failure="generic_timeout_error")
    assert judge(keys).codes == ()


def test_benign_sni_check_proves_sni_filtering() -> None:
    """A benign-SNI handshake that reached the server makes a TLS reset self-proving."""
    check = {"address": "192.0.2.1:443", "server_name": "example.com",
             "failure": "ssl_invalid_hostname"}
    keys = _keys("connection_reset", "tls_handshake", x_sni_checks=[check])
    assert judge(keys).codes == ("tls.reset",)
    check["failure"] = "connection_reset"
    assert judge(keys).codes == ()


def test_dns_failure_with_resolving_control() -> None:
    """NXDOMAIN while the helper resolved the name: dns.nxdomain."""
    keys = _keys("dns_nxdomain_error", "resolve", dns_experiment_failure="dns_nxdomain_error",
                 control={"dns": {"addrs": ["192.0.2.1"], "failure": None}})
    keys["x_endpoint_results"] = []
    assert judge(keys).codes == ("dns.nxdomain",)


def test_apply_writes_keys_and_returns_the_retry_identity() -> None:
    """apply() fills reachable/failure/interference; unreachable verdicts look blocked."""
    keys = _keys("connection_reset", "tls_handshake", control=WORKS)
    assert apply(keys) == ("connection_reset", ("tls.reset",))
    assert keys["interference"] == ["tls.reset"]
    ok = _keys(None, None)
    assert apply(ok) == (False, ()) and ok["failure"] is None


def test_engine_failure_record_is_unreachable() -> None:
    """A crashed measurement (web-shaped failure keys) is unreachable with that failure."""
    verdict = judge({"http_experiment_failure": "unknown_failure: boom"})
    assert verdict.reachable is False and verdict.failure == "unknown_failure: boom"


def test_known_test_names() -> None:
    """The engine dispatches exactly the endpoint experiments' names here."""
    names = {spec.test_name for spec in SPECS}
    assert {"tcpconnect", "tlshandshake", "openvpn", "wireguard", "tor",
            "stunreachability", "dnscheck", "quichandshake"} == {name for name in names
                                                if kind_of(name) == "endpoint"}


def test_blocking_and_accessible_follow_ooni_meaning() -> None:
    """Reachable: not blocked, accessible; interference: the step; down everywhere: down."""
    assert judge(_keys(None, None)).blocking is False
    assert judge(_keys(None, None)).accessible is True
    blocked = judge(_keys("connection_refused", "tcp_connect", control=TCP_ONLY))
    assert (blocked.blocking, blocked.accessible) == ("tcp_ip", False)
    proto = judge(_keys("generic_timeout_error", "openvpn_handshake", control=WORKS))
    assert proto.blocking == "openvpn"
    down = judge(_keys("generic_timeout_error", "stun_binding", control=DOWN))
    assert (down.blocking, down.accessible) == (False, False)
    unknown = judge(_keys("generic_timeout_error", "stun_binding"))
    assert (unknown.blocking, unknown.accessible) == (None, None)
