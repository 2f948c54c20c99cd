"""``quic://``: a bare QUIC handshake against an aioquic server on loopback, with and
without a censor dropping the probe's datagrams."""

from __future__ import annotations

from oonidata.dataclient import load_measurement

from tests.endpoints.censor import udp_relay
from tests.endpoints.conftest import Measure
from tests.http3.h3server import H3Server, closed_udp_port


async def test_handshake_completes(measure: Measure, h3: H3Server) -> None:
    record = await measure(f"quic://127.0.0.1:{h3.port}?sni=site.test")
    keys = record["test_keys"]
    assert record["test_name"] == "quichandshake"
    assert keys["reachable"] is True and keys["failure"] is None
    (shake,) = keys["quic_handshakes"]
    assert shake["network"] == "udp" and shake["server_name"] == "site.test"
    assert shake["negotiated_protocol"] == "h3" and shake["peer_certificates"]
    assert keys["interference"] == [] and keys["accessible"] is True
    load_measurement(msmt=record)  # OONI's parser takes it (as an unknown test: base model)


async def test_wrong_name_is_a_certificate_failure_unless_verify_is_off(
        measure: Measure, h3: H3Server) -> None:
    bad = (await measure(f"quic://127.0.0.1:{h3.port}?sni=wrong.test"))["test_keys"]
    assert bad["failure"] == "ssl_invalid_hostname"
    assert bad["failed_operation"] == "quic_handshake"
    unverified = (await measure(f"quic://127.0.0.1:{h3.port}?sni=wrong.test&verify=0"))[
        "test_keys"]
    assert unverified["reachable"] is True
    assert unverified["quic_handshakes"][0]["no_tls_verify"] is True


async def test_udp_drop_is_quic_timeout_with_control(measure: Measure, h3: H3Server,
                                                     helper_url: str) -> None:
    """Dropped inside, answered outside (the helper's 127.0.0.2 passes): quic.timeout."""
    async with udp_relay(h3.port) as relay:
        keys = (await measure(f"quic://127.0.0.1:{relay.port}?sni=site.test",
                              helper_url=helper_url))["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "generic_timeout_error"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["quic.timeout"]
    assert keys["blocking"] == "quic"


async def test_closed_port_everywhere_is_not_interference(measure: Measure,
                                                          helper_url: str) -> None:
    """ICMP port unreachable inside and outside: connection_refused, no code."""
    keys = (await measure(f"quic://127.0.0.1:{closed_udp_port()}?sni=site.test",
                          helper_url=helper_url))["test_keys"]
    assert keys["failure"] == "connection_refused"
    assert keys["control"]["x_endpoint"]["reachable"] is False
    assert keys["interference"] == []
