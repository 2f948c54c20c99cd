"""TCP endpoint probes over a segmenting, pacing relay (tests/relay.py): replies that arrive
in small pieces are reassembled (``stream.read_until`` waits until the reply's framing says
it is complete), as they must be on a real path. Real daemons, as in the other tests here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.endpoints import daemons
from tests.endpoints.conftest import Measure
from tests.relay import SegmentingRelay

# Small segments so every reply (OpenVPN's reset, tor's CERTS cell, obfs4's server
# handshake) is cut in several places, including inside its length fields.
SEGMENT, PAUSE = 97, 0.002


@pytest.fixture(scope="module")
def obfs4_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[daemons.Obfs4Bridge]:
    with daemons.obfs4_bridge(tmp_path_factory.mktemp("obfs4-seg")) as bridge:
        yield bridge


async def test_openvpn_tcp_reply_in_pieces(measure: Measure, openvpn_tcp: int) -> None:
    """OpenVPN over TCP: the length-prefixed server reset, cut into 97-byte segments."""
    async with SegmentingRelay(openvpn_tcp, segment=5, pause=PAUSE) as relay:
        keys = (await measure(f"openvpn+tcp://127.0.0.1:{relay.port}"))["test_keys"]
    assert keys["reachable"] is True, keys["failure"]
    assert keys["openvpn_handshake"][0]["transport"] == "tcp"
    assert relay.segments_down >= 2


async def test_tor_link_reply_in_pieces(measure: Measure,
                                        tor_relay: daemons.TorRelay) -> None:
    """tor: TLS records and the VERSIONS and CERTS cells they carry, cut into segments."""
    async with SegmentingRelay(tor_relay.port, segment=SEGMENT, pause=PAUSE) as relay:
        uri = f"tor://127.0.0.1:{relay.port}?fingerprint={tor_relay.fingerprint}"
        keys = (await measure(uri))["test_keys"]
    assert keys["reachable"] is True, keys["failure"]
    assert keys["x_tor_link"][0]["fingerprint_match"] is True
    assert relay.segments_down >= 10


async def test_obfs4_server_handshake_in_pieces(measure: Measure,
                                                obfs4_bridge: daemons.Obfs4Bridge) -> None:
    """obfs4: the server handshake (padding, mark, MAC) found across segments."""
    async with SegmentingRelay(obfs4_bridge.port, segment=SEGMENT, pause=PAUSE) as relay:
        uri = f"obfs4://127.0.0.1:{relay.port}?cert={obfs4_bridge.cert}&iat-mode=0"
        keys = (await measure(uri))["test_keys"]
    assert keys["reachable"] is True, keys["failure"]
    assert keys["x_obfs4_handshake"][0]["auth_verified"] is True
    assert relay.segments_down >= 2
