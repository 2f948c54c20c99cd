"""openvpn+udp:// and openvpn+tcp:// against a real OpenVPN 2.6 server, and through censors."""

from __future__ import annotations

import asyncio

from oonidata.dataclient import load_measurement

from kzprobe.measure.experiments.openvpn import answers, client_reset, frame, parse_control
from tests.endpoints.censor import tcp_filter, udp_relay
from tests.endpoints.conftest import Measure
from tests.servers import refused_port


def test_client_reset_is_openvpn_hard_reset_v2() -> None:
    """The first packet is opcode 7 / key id 0, our session id, no ACKs, packet id 0."""
    packet = client_reset(b"\x01" * 8)
    assert packet[0] == 7 << 3 and packet[1:9] == b"\x01" * 8 and packet[9:] == b"\x00" * 5
    assert frame(packet)[:2] == b"\x00\x0e"


def test_only_a_server_reset_acking_our_session_answers() -> None:
    """A server reset must acknowledge packet 0 of our session id, not someone else's."""
    ours, other = b"A" * 8, b"B" * 8
    reply = bytes([8 << 3]) + b"S" * 8 + b"\x01" + b"\x00" * 4 + ours + b"\x00" * 4
    assert answers(reply, ours)
    assert not answers(reply, other)
    assert not answers(bytes([5 << 3]) + reply[1:], ours)  # a P_CONTROL_V1, not a reset
    assert parse_control(reply[:12]) is None


async def test_udp_server_answers_the_hard_reset(measure: Measure, openvpn_udp: int) -> None:
    """A real OpenVPN UDP server is reachable; the exchange is recorded as network events."""
    record = await measure(f"openvpn+udp://127.0.0.1:{openvpn_udp}")
    keys = record["test_keys"]
    assert record["test_name"] == "openvpn"
    assert keys["reachable"] is True and keys["success"] is True and keys["failure"] is None
    shake = keys["openvpn_handshake"][0]
    assert shake["transport"] == "udp" and shake["x_server_opcode"] == 8
    assert shake["status"] == {"success": True, "failure": None}
    ops = [e["operation"] for e in keys["network_events"]]
    assert ops[:2] == ["write_to", "read_from"]
    assert keys["interference"] == []
    load_measurement(msmt=record)  # OONI's parser reads it


async def test_tcp_server_answers_the_hard_reset(measure: Measure, openvpn_tcp: int) -> None:
    """A real OpenVPN TCP server is reachable after a recorded TCP connect."""
    keys = (await measure(f"openvpn+tcp://127.0.0.1:{openvpn_tcp}"))["test_keys"]
    assert keys["reachable"] is True
    assert keys["tcp_connect"][0]["status"]["success"] is True
    assert keys["openvpn_handshake"][0]["transport"] == "tcp"


async def test_closed_udp_port_is_refused(measure: Measure) -> None:
    """ICMP port-unreachable on loopback is connection_refused, not a timeout."""
    keys = (await measure(f"openvpn+udp://127.0.0.1:{refused_port()}"))["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "connection_refused"
    assert keys["failed_operation"] == "openvpn_handshake"


async def test_udp_drop_is_interference_when_the_control_gets_through(
        measure: Measure, openvpn_udp: int, helper_url: str) -> None:
    """Dropped UDP with a control that completed the same handshake: openvpn.timeout."""
    async with udp_relay(openvpn_udp, drop=True) as relay:
        record = await measure(f"openvpn+udp://127.0.0.1:{relay.port}", helper_url=helper_url)
    keys = record["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "generic_timeout_error"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["openvpn.timeout"]
    assert relay.dropped >= 3  # the probe retransmitted


async def test_udp_drop_without_control_is_no_verdict(measure: Measure, openvpn_udp: int) -> None:
    """Without a control, silence is not evidence of blocking: no interference code."""
    async with udp_relay(openvpn_udp, drop=True) as relay:
        keys = (await measure(f"openvpn+udp://127.0.0.1:{relay.port}"))["test_keys"]
    assert keys["reachable"] is False and keys["interference"] == []


async def test_relay_that_passes_is_reachable(measure: Measure, openvpn_udp: int) -> None:
    """The censor's relay itself is transparent when it does not drop (the test's own check)."""
    async with udp_relay(openvpn_udp, drop=False) as relay:
        keys = (await measure(f"openvpn+udp://127.0.0.1:{relay.port}"))["test_keys"]
    assert keys["reachable"] is True


async def test_tcp_port_block_by_reset(measure: Measure, openvpn_tcp: int,
                                       helper_url: str) -> None:
    """A box that resets unnamed (non-TLS) flows to the port: openvpn.reset with a control."""
    async with tcp_filter(openvpn_tcp, default="reset") as box:
        record = await measure(f"openvpn+tcp://127.0.0.1:{box.address[1]}",
                               helper_url=helper_url)
    keys = record["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "connection_reset"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["openvpn.reset"]


async def test_a_server_that_is_not_openvpn_is_invalid(measure: Measure) -> None:
    """A TCP service answering something else is a protocol failure, not reachable."""
    async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x00\x05HELLO")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(other, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        keys = (await measure(f"openvpn+tcp://127.0.0.1:{port}"))["test_keys"]
    assert keys["reachable"] is False
    assert keys["failure"].startswith("unknown_failure: ProtocolError")
