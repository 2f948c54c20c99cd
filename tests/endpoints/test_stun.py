"""stun:// (OONI stunreachability) against coturn, and through a UDP-dropping censor."""

from __future__ import annotations

import struct

from oonidata.dataclient import load_measurement

from kzprobe.measure.experiments.stun import (
    BINDING_SUCCESS,
    MAGIC_COOKIE,
    attributes,
    binding_request,
    is_response,
)
from tests.endpoints.censor import udp_relay
from tests.endpoints.conftest import Measure


def test_binding_request_and_response_matching() -> None:
    """Only a success/error response with our transaction id and a consistent length matches."""
    tid = b"\x05" * 12
    assert binding_request(tid) == struct.pack("!HHI", 1, 0, MAGIC_COOKIE) + tid
    attr = struct.pack("!HH", 0x0020, 8) + b"\x00\x01\x12\x34\x5e\x12\xa4\x43"
    reply = struct.pack("!HHI", BINDING_SUCCESS, len(attr), MAGIC_COOKIE) + tid + attr
    assert is_response(reply, tid)
    assert not is_response(reply, b"\x06" * 12)
    assert not is_response(reply[:-1], tid)
    assert attributes(reply)[0x0020][1] == 1


async def test_coturn_answers_binding(measure: Measure, stun_server: int) -> None:
    """coturn answers; the mapped address's family is kept, the address itself is not."""
    record = await measure(f"stun://127.0.0.1:{stun_server}")
    keys = record["test_keys"]
    assert record["test_name"] == "stunreachability"
    assert keys["reachable"] is True and keys["failure"] is None
    assert keys["endpoint"] == f"127.0.0.1:{stun_server}"
    assert keys["x_stun"][0]["x_response_type"] == BINDING_SUCCESS
    assert keys["x_stun"][0]["x_mapped_address_family"] == "ipv4"
    parsed = load_measurement(msmt=record)  # OONI's stunreachability model
    assert parsed.test_keys.failure is None


async def test_udp_drop_is_stun_timeout_with_control(measure: Measure, stun_server: int,
                                                     helper_url: str) -> None:
    """Binding requests dropped inside, answered outside: stun.timeout."""
    async with udp_relay(stun_server, drop=True) as relay:
        keys = (await measure(f"stun://127.0.0.1:{relay.port}", helper_url=helper_url))[
            "test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "generic_timeout_error"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["control"]["tcp_connect"] == {}  # no TCP control for a UDP endpoint
    assert keys["interference"] == ["stun.timeout"]


async def test_dead_server_everywhere_is_not_interference(measure: Measure,
                                                          helper_url: str) -> None:
    """Silent inside and outside: unreachable, but no interference code."""
    async with udp_relay(1, drop=True) as relay:  # the helper's datagrams go to port 1
        relay.exempt = frozenset()  # drop everyone's
        keys = (await measure(f"stun://127.0.0.1:{relay.port}", helper_url=helper_url))[
            "test_keys"]
    assert keys["reachable"] is False
    assert keys["control"]["x_endpoint"]["reachable"] is False
    assert keys["interference"] == []
