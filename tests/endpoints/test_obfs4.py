"""obfs4:// : Elligator 2 and the handshake pieces, then against a real obfs4proxy bridge,
impostor servers and the loopback censor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from oonidata.dataclient import load_measurement

from kzprobe.measure.experiments import obfs4
from kzprobe.report.build import build_report
from kzprobe.targets import parse_target
from tests.endpoints import daemons
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import Measure

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TLS_TIMEOUT = 2.0  # tests/endpoints/conftest.py's endpoint_config

# Elligator 2 direct-map vectors (representative -> u, little-endian hex) from Monocypher's
# tests/gen/vectors/elligator_dir (Loup Vaillant, CC0/BSD-2), the map obfs4 decodes with.
DIRECT_MAP_VECTORS = [
    ("d3c41ec20dbe9fc33ccc14823d898066f433a892994ffbcc921e9f5ace519d02",
     "170a436471aaa00d817436197fde47fa3320aa040b48d1d2a9f155e15ce3975e"),
    ("e03a05ebde6ca000cdc5c539bf48a1d08222483b87693046e00a411a8d93dd34",
     "b8e22e654ae391c44be4760a30d13950651d454c7ec71f0bdf7c5669bb22b564"),
    ("7a48adebb692fdb8e5a2176389f3f0bcbdc1956b0d57acac4a8eda87b577e618",
     "22997bed0e3c6023e73fb371e6d3c5c3661a87c6f3f787ba6054e699aef5aa64"),
    ("e73507d38bae63992b3f57aac48c0abc14509589288457995a2b4ca3490aa207",
     "1e8afffed6bf53fe271ad572473262ded8faec68e5e67ef45ebb82eeba52604f"),
    ("f6ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff3f",
     "9cdb525555555555555555555555555555555555555555555555555555555555"),
]


def _le(hex_text: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_text), "little")


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _random_cert() -> str:
    return base64.b64encode(secrets.token_bytes(52)).decode().rstrip("=")


# --------------------------------------------------------------------------- Elligator 2


@pytest.mark.parametrize(("representative", "u"), DIRECT_MAP_VECTORS)
def test_direct_map_known_answers(representative: str, u: str) -> None:
    """The direct map gives Monocypher's u; the inverse map gives the representative back."""
    assert obfs4.forward(_le(representative)) == _le(u)
    assert _le(representative) in (obfs4.inverse(_le(u), False), obfs4.inverse(_le(u), True))


def test_inverse_then_forward_is_identity_for_random_keys() -> None:
    """For random X25519 keys, forward(inverse(u)) == u wherever a representative exists;
    about half of the keys have one, and both choices of sign work."""
    found = 0
    for _ in range(200):
        u = obfs4.u_from_bytes(_public(X25519PrivateKey.generate()))
        for alternate in (False, True):
            r = obfs4.inverse(u, alternate)
            if r is not None:
                assert r <= obfs4.HALF_P and obfs4.forward(r) == u
                found += alternate
    assert 60 <= found <= 140


def test_sqrt_finds_roots_and_refuses_non_squares() -> None:
    """sqrt(x^2) is ±x; 2 is not a square mod 2^255-19."""
    for _ in range(50):
        x = secrets.randbelow(obfs4.P)
        assert obfs4.sqrt(x * x) in (x, obfs4.P - x)
    assert obfs4.sqrt(2) is None


def test_low_order_points_are_the_torsion_subgroup() -> None:
    """Eight distinct points on the curve, the generator of order exactly 8."""
    points = obfs4.LOW_ORDER
    assert len(set(points)) == 8 and points[0] == (0, 1)
    for x, y in points:
        assert (-x * x + y * y - 1 - obfs4.D * x * x * y * y) % obfs4.P == 0
    assert obfs4._edwards_add(points[4], points[4]) == (0, 1) and points[4] != (0, 1)


def test_dirty_public_key_agrees_with_the_clean_one() -> None:
    """Adding a low-order point changes u but not any X25519 shared secret (clamping)."""
    server = X25519PrivateKey.generate()
    for index in range(8):
        private = X25519PrivateKey.generate()
        clean = obfs4.u_from_bytes(_public(private))
        dirty = obfs4.add_low_order(clean, index)
        assert dirty is not None and (dirty == clean) is (index == 0)
        assert server.exchange(X25519PublicKey.from_public_bytes(obfs4.u_bytes(dirty))) == \
            server.exchange(private.public_key())


def test_session_keys_decode_to_their_public_key() -> None:
    """The representative decodes (top bits masked) to the key's u; the padding bits vary."""
    tops = set()
    for _ in range(40):
        key = obfs4.session_key()
        assert obfs4.decode_representative(key.representative) == obfs4.u_from_bytes(key.public)
        tops.add(key.representative[31] >> 6)
    assert len(tops) > 1


# --------------------------------------------------------------------------- handshake pieces


def test_client_hello_layout() -> None:
    """X' | P_C | M_C | MAC_C with both HMACs keyed by B | NODEID, MAC over E too."""
    bridge = obfs4.Bridge(b"\x01" * 20, b"\x02" * 32)
    key = obfs4.session_key()
    hello = obfs4.client_hello(bridge, key, 100, b"500000")
    message = hello.message
    assert len(message) == 32 + 100 + 32 and message[:32] == key.representative
    mark = hmac.digest(bridge.mac_key, key.representative, "sha256")[:16]
    assert message[-32:-16] == mark
    assert message[-16:] == hmac.digest(bridge.mac_key, message[:-16] + b"500000", "sha256")[:16]
    assert obfs4.CLIENT_MIN_PAD == 85 and obfs4.CLIENT_MAX_PAD == 8128


def test_reply_size_waits_for_the_mac_and_gives_up_at_8192_bytes() -> None:
    """Incomplete until M_S and MAC_S are in; 8192 bytes without a mark are judged."""
    bridge = obfs4.Bridge(b"\x01" * 20, b"\x02" * 32)
    reply = _forged_reply(bridge, b"500000", b"p" * 50)
    assert obfs4.reply_size(reply[:-1], bridge) is None
    assert obfs4.reply_size(reply + b"frame", bridge) == len(reply)
    assert obfs4.reply_size(b"x" * 9000, bridge) == 9000
    assert obfs4.check_reply(obfs4.new_hello(bridge), b"x" * 9000) == \
        "no obfs4 server mark (M_S) in the reply"


def test_bad_certs_are_refused() -> None:
    """cert must be base64 of exactly 52 bytes."""
    with pytest.raises(ValueError, match="not base64"):
        obfs4.Bridge.from_cert("not*base64")
    with pytest.raises(ValueError, match="51 bytes"):
        obfs4.Bridge.from_cert(base64.b64encode(b"x" * 51).decode())


@pytest.mark.parametrize(("query", "reason"), [
    ("", "needs cert"),
    ("?cert=AAAA", "bad cert: expected 52 bytes"),
    ("?cert=%%%", "bad cert: expected base64"),
    ("?cert={cert}&iat-mode=3", "bad iat-mode"),
    ("?cert={cert}&fingerprint=" + "A" * 40, "unknown parameter 'fingerprint'"),
])
def test_obfs4_uris_say_what_is_wrong(query: str, reason: str) -> None:
    """A missing or malformed cert or iat-mode is a one-line target error."""
    with pytest.raises(ValueError, match=reason):
        parse_target("obfs4://192.0.2.1:443" + query.format(cert=_random_cert()))


def test_obfs4_uri_keeps_the_cert_unpadded() -> None:
    """Padded or not, the cert is kept as in bridge lines; '+' and '/' survive."""
    raw = bytes(range(200, 252))
    padded = base64.b64encode(raw).decode()
    target = parse_target(f"obfs4://192.0.2.1:443?cert={padded}&iat-mode=0")
    assert target.param("cert") == padded.rstrip("=") and "/" in padded
    assert obfs4.Bridge.from_cert(target.param("cert") or "").node_id == raw[:20]


# --------------------------------------------------------------------------- impostors


def _forged_reply(bridge: obfs4.Bridge, hour: bytes, padding: bytes) -> bytes:
    """What a box that knows the (public) cert but not B's private key can send."""
    representative = obfs4.session_key().representative
    body = representative + secrets.token_bytes(32) + padding
    body += hmac.digest(bridge.mac_key, representative, "sha256")[:16]
    return body + hmac.digest(bridge.mac_key, body + hour, "sha256")[:16]


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _drain(reader: asyncio.StreamReader) -> None:
    """Read what the client sent (closing with unread data would send a RST instead)."""
    with contextlib.suppress(TimeoutError):
        while await asyncio.wait_for(reader.read(65536), 0.2):
            pass


async def _read_hello(reader: asyncio.StreamReader, bridge: obfs4.Bridge) -> bytes:
    data = b""
    while len(data) < 96 or data[-32:-16] != hmac.digest(
            bridge.mac_key, data[:32], "sha256")[:16]:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return data


async def test_forged_framing_without_the_identity_key_fails_auth(measure: Measure) -> None:
    """A server with the right M_S and MAC_S but no private key: AUTH does not verify."""
    cert = _random_cert()
    bridge = obfs4.Bridge.from_cert(cert)

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_hello(reader, bridge)
        writer.write(_forged_reply(bridge, obfs4.epoch_hour(), secrets.token_bytes(300)))
        await writer.drain()
        await reader.read(1)
        writer.close()

    async with _server(impostor) as port:
        keys = (await measure(f"obfs4://127.0.0.1:{port}?cert={cert}"))["test_keys"]
    assert keys["reachable"] is False and keys["failed_operation"] == "obfs4_handshake"
    assert keys["failure"] == ("unknown_failure: ProtocolError: obfs4 AUTH does not verify: "
                               "not the bridge's identity key")
    assert keys["x_obfs4_handshake"][0]["auth_verified"] is False


@pytest.mark.parametrize(("reply", "failure"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "eof_error"),
    (b"\x00" * 9000, "unknown_failure: ProtocolError: no obfs4 server mark (M_S) in the reply"),
])
async def test_a_server_that_is_not_obfs4(measure: Measure, reply: bytes, failure: str) -> None:
    """Garbage then close is eof_error; 8192 bytes without a mark are not obfs4."""
    async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _drain(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async with _server(other) as port:
        keys = (await measure(f"obfs4://127.0.0.1:{port}?cert={_random_cert()}"))["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == failure
    assert keys["failed_operation"] == "obfs4_handshake"
    assert keys["tcp_connect"][0]["status"]["success"] is True


# --------------------------------------------------------------------------- real bridge


@pytest.fixture(scope="module")
def obfs4_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[daemons.Obfs4Bridge]:
    with daemons.obfs4_bridge(tmp_path_factory.mktemp("obfs4")) as bridge:
        yield bridge


async def test_bridge_completes_the_handshake(measure: Measure,
                                              obfs4_bridge: daemons.Obfs4Bridge) -> None:
    """A real obfs4proxy answers; its AUTH proves it holds the identity key in the cert."""
    uri = f"obfs4://127.0.0.1:{obfs4_bridge.port}?cert={obfs4_bridge.cert}&iat-mode=0"
    record = await measure(uri)
    keys = record["test_keys"]
    assert record["test_name"] == "tor" and keys["x_protocol"] == "obfs4"
    assert keys["reachable"] is True and keys["failure"] is None and keys["interference"] == []
    shake = keys["x_obfs4_handshake"][0]
    assert shake["auth_verified"] is True and shake["failure"] is None
    assert 85 + 64 <= shake["bytes_sent"] <= 8192 and shake["bytes_received"] >= 96
    assert shake["node_id"] == obfs4.Bridge.from_cert(obfs4_bridge.cert).node_id.hex()
    assert [e["operation"] for e in keys["network_events"]] == ["write", "read"]
    parsed = load_measurement(msmt=record)  # OONI's tor model reads it as an obfs4 target
    assert parsed.test_keys.targets[uri].target_protocol == "obfs4"
    assert parsed.test_keys.targets[uri].failure is None


async def test_wrong_cert_is_a_bounded_timeout(measure: Measure,
                                               obfs4_bridge: daemons.Obfs4Bridge) -> None:
    """The bridge stays silent to a MAC made with another cert: a timeout at the bound."""
    start = time.monotonic()
    keys = (await measure(f"obfs4://127.0.0.1:{obfs4_bridge.port}?cert={_random_cert()}")
            )["test_keys"]
    elapsed = time.monotonic() - start
    assert keys["failure"] == "generic_timeout_error"
    assert keys["failed_operation"] == "obfs4_handshake"
    assert keys["x_obfs4_handshake"][0]["auth_verified"] is None
    assert keys["interference"] == []  # no control: silence is not evidence
    assert TLS_TIMEOUT <= elapsed < TLS_TIMEOUT + 3.0  # bounded: not the 30-90 s the bridge waits


async def test_reset_is_obfs4_reset(measure: Measure, obfs4_bridge: daemons.Obfs4Bridge,
                                    helper_url: str) -> None:
    """A censor resetting the flow after the first bytes: obfs4.reset, the control got
    through and completed the handshake."""
    async with tcp_filter(obfs4_bridge.port, default="reset") as box:
        record = await measure(f"obfs4://127.0.0.1:{box.address[1]}?cert={obfs4_bridge.cert}",
                               helper_url=helper_url)
    keys = record["test_keys"]
    assert keys["failure"] == "connection_reset"
    assert keys["failed_operation"] == "obfs4_handshake"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["obfs4.reset"] and keys["blocking"] == "obfs4"


async def test_bridge_records_appear_in_the_report(
        measure: Measure, obfs4_bridge: daemons.Obfs4Bridge, helper_url: str,
        tmp_path: Path) -> None:
    """Reachable and reset bridge records, written as NDJSON, are rows of `kzprobe report`."""
    good = f"obfs4://127.0.0.1:{obfs4_bridge.port}?cert={obfs4_bridge.cert}"
    async with tcp_filter(obfs4_bridge.port, default="reset") as box:
        bad = f"obfs4://127.0.0.1:{box.address[1]}?cert={obfs4_bridge.cert}"
        records = [await measure(good, helper_url=helper_url),
                   await measure(bad, helper_url=helper_url)]
    (tmp_path / "obfs4.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    rows = {row["input"]: row for row in build_report([tmp_path]).table("targets").records()}
    assert rows[good]["state"] == "accessible" and rows[good]["test_name"] == "tor"
    assert rows[bad]["state"] == "blocked" and rows[bad]["mechanism"] == "obfs4.reset"
