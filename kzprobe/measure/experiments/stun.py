"""``stun://host:port``: OONI ``stunreachability``, a STUN Binding request over UDP.

RFC 5389: a 20-byte Binding request (type 0x0001, magic cookie 0x2112A442, random
96-bit transaction id); reachable when a Binding success response (0x0101) with our
transaction id comes back. The response's XOR-MAPPED-ADDRESS is the probe's public
address, so only its presence and family are recorded, never the address itself.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from kzprobe.measure.experiments.endpoint import (
    EndpointExperiment,
    Flow,
    Outcome,
    protocol_failure,
)
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import udp

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
XOR_MAPPED_ADDRESS = 0x0020
MAPPED_ADDRESS = 0x0001
HEADER = struct.Struct("!HHI12s")


def binding_request(transaction_id: bytes) -> bytes:
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction_id)


def attributes(message: bytes) -> dict[int, bytes]:
    """The attributes of a well-formed message (first of each type), bounded by its length."""
    found: dict[int, bytes] = {}
    offset = HEADER.size
    while offset + 4 <= len(message):
        kind, size = struct.unpack_from("!HH", message, offset)
        value = message[offset + 4:offset + 4 + size]
        found.setdefault(kind, value)
        offset += 4 + size + (-size % 4)  # attributes are padded to 4 bytes
    return found


def is_response(message: bytes, transaction_id: bytes) -> bool:
    """A Binding success or error response to our transaction."""
    if len(message) < HEADER.size:
        return False
    kind, length, cookie, tid = HEADER.unpack_from(message)
    return (kind in (BINDING_SUCCESS, BINDING_ERROR) and cookie == MAGIC_COOKIE
            and tid == transaction_id and HEADER.size + length == len(message))


def _mapped_family(attrs: dict[int, bytes]) -> str | None:
    value = attrs.get(XOR_MAPPED_ADDRESS) or attrs.get(MAPPED_ADDRESS)
    if value is None or len(value) < 2:
        return None
    return {1: "ipv4", 2: "ipv6"}.get(value[1])


def _details(flow: Flow, address: str, reply: bytes | None, failure: str | None,
             t0: float) -> dict[str, Any]:
    kind = HEADER.unpack_from(reply)[0] if reply else None
    attrs = attributes(reply) if reply else {}
    return {"endpoint": address, "failure": failure, "t0": t0, "t": flow.clock.now(),
            "x_response_type": kind, "x_mapped_address_family": _mapped_family(attrs)}


class StunReachability(EndpointExperiment):
    """One Binding request per address (retransmitted as RFC 5389 clients do)."""

    test_name = spec_for("stun").test_name  # the registry's, not repeated here
    test_version = spec_for("stun").test_version
    protocol_key = "x_stun"

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        transaction_id = os.urandom(12)
        result = await udp.exchange(
            ip, flow.target.port, binding_request(transaction_id),
            accept=lambda m: is_response(m, transaction_id), timeout=flow.ctx.config.timeouts.tls,
            clock=flow.clock, transaction_id=flow.transaction_id(),
            source=flow.ctx.source_address)
        flow.events.extend(result.events)
        failure = result.failure
        if result.reply is not None and HEADER.unpack_from(result.reply)[0] == BINDING_ERROR:
            failure = protocol_failure("STUN binding error response")
        details = _details(flow, result.address, result.reply, failure, result.t0)
        return Outcome(address=result.address, failure=failure,
                       failed_operation="stun_binding" if failure else None, details=details,
                       t0=result.t0, t=result.t)
