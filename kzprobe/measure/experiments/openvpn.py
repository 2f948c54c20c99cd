"""``openvpn+tcp://`` and ``openvpn+udp://``: does an OpenVPN server answer a session reset?

The client sends a real ``P_CONTROL_HARD_RESET_CLIENT_V2`` (OpenVPN's first packet,
``ssl_pkt.h``/``ssl.c``: opcode 7 << 3 | key id 0, an 8-byte random session id, an empty
ACK array and message packet id 0; over TCP a 2-byte length prefix) and waits for
``P_CONTROL_HARD_RESET_SERVER_V2`` (opcode 8) acknowledging packet 0 of *our* session id.
That proves an OpenVPN server is reachable at the protocol level, without credentials;
nothing further (TLS, data channel) is attempted. Servers configured with ``tls-auth`` or
``tls-crypt`` drop packets without the shared key, so they stay silent to this test (and
to any censor's active probe): a timeout there is not, alone, evidence of blocking.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from kzprobe.measure.context import close_transport
from kzprobe.measure.experiments.endpoint import (
    Dialled,
    EndpointExperiment,
    Flow,
    Outcome,
    dial,
    protocol_failure,
)
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import stream, udp
from kzprobe.targets import Target

P_CONTROL_HARD_RESET_CLIENT_V2 = 7
P_CONTROL_HARD_RESET_SERVER_V2 = 8


def client_reset(session_id: bytes) -> bytes:
    """The client's hard reset: opcode/key id, session id, no ACKs, packet id 0."""
    return bytes([P_CONTROL_HARD_RESET_CLIENT_V2 << 3]) + session_id + b"\x00" + b"\x00" * 4


def frame(packet: bytes) -> bytes:
    """OpenVPN over TCP: each packet after a 16-bit big-endian length."""
    return struct.pack("!H", len(packet)) + packet


@dataclass(frozen=True, slots=True)
class ServerReset:
    """The fields of a server hard reset that show it answers our session."""

    opcode: int
    key_id: int
    session_id: bytes
    acks: tuple[int, ...]
    remote_session_id: bytes | None


def parse_control(packet: bytes) -> ServerReset | None:
    """Parse a control packet header (no tls-auth HMAC); None if truncated."""
    if len(packet) < 10:
        return None
    count = packet[9]
    end = 10 + 4 * count
    if len(packet) < end + (8 if count else 0) + 4:
        return None
    acks = struct.unpack(f"!{count}I", packet[10:end])
    remote = packet[end:end + 8] if count else None
    return ServerReset(packet[0] >> 3, packet[0] & 7, packet[1:9], acks, remote)


def answers(packet: bytes, session_id: bytes) -> bool:
    """A ``P_CONTROL_HARD_RESET_SERVER_V2`` that acknowledges our packet 0."""
    parsed = parse_control(packet)
    return (parsed is not None and parsed.opcode == P_CONTROL_HARD_RESET_SERVER_V2
            and parsed.remote_session_id == session_id and 0 in parsed.acks)


def _tcp_complete(buffer: bytes) -> int | None:
    if len(buffer) < 2:
        return None
    size = 2 + struct.unpack("!H", buffer[:2])[0]
    return size if len(buffer) >= size else None


def _details(flow: Flow, ip: str, transport: str, failure: str | None, reply: bytes | None,
             t0: float) -> dict[str, Any]:
    parsed = parse_control(reply) if reply else None
    t = flow.clock.now()
    return {
        "transport": transport,
        "endpoint": f"openvpn+{transport}://{udp.format_address(ip, flow.target.port)}",
        "ip": ip,
        "port": flow.target.port,
        "status": {"success": failure is None, "failure": failure},
        "handshake_time": round(t - t0, 6) if failure is None else None,
        "x_server_opcode": parsed.opcode if parsed else None,
        "x_server_session_id": parsed.session_id.hex() if parsed else None,
        "t0": t0,
        "t": t,
    }


class OpenVpn(EndpointExperiment):
    """One OpenVPN hard-reset exchange per address, over TCP or UDP (by scheme)."""

    test_name = spec_for("openvpn+tcp").test_name  # the registry's, not repeated here
    test_version = spec_for("openvpn+tcp").test_version
    protocol_key = "openvpn_handshake"

    def finish(self, target: Target, keys: dict[str, Any]) -> dict[str, Any]:
        keys["success"] = keys["reachable"]  # OONI openvpn's name for it
        return keys

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        if flow.target.scheme == "openvpn+udp":
            return await _over_udp(flow, ip)
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        try:
            return await _over_tcp(flow, ip, conn)
        finally:
            await close_transport(conn.transport)


async def _over_udp(flow: Flow, ip: str) -> Outcome:
    cfg = flow.ctx.config
    session = os.urandom(8)
    tid = flow.transaction_id()
    result = await udp.exchange(
        ip, flow.target.port, client_reset(session), accept=lambda p: answers(p, session),
        timeout=cfg.timeouts.tls, clock=flow.clock, transaction_id=tid,
        source=flow.ctx.source_address)
    flow.events.extend(result.events)
    details = _details(flow, ip, "udp", result.failure, result.reply, result.t0)
    return Outcome(address=result.address, failure=result.failure,
                   failed_operation="openvpn_handshake" if result.failure else None,
                   details=details, t0=result.t0, t=result.t)


async def _over_tcp(flow: Flow, ip: str, conn: Dialled) -> Outcome:
    session = os.urandom(8)
    reader = stream.StreamProtocol.adopt(conn.transport, conn.held)
    t0 = flow.clock.now()
    result = await stream.request(
        conn.transport, reader, frame(client_reset(session)), complete=_tcp_complete,
        timeout=flow.ctx.config.timeouts.tls, clock=flow.clock, address=conn.address,
        transaction_id=conn.tid)
    flow.events.extend(result.events)
    failure = result.failure
    packet = result.reply[2:] if result.reply is not None else None
    if packet is not None and not answers(packet, session):
        failure = protocol_failure("not an OpenVPN server reset for our session")
    details = _details(flow, ip, "tcp", failure, packet, t0)
    return Outcome(address=conn.address, failure=failure,
                   failed_operation="openvpn_handshake" if failure else None,
                   details=details, t0=conn.connect.t0, t=flow.clock.now())
