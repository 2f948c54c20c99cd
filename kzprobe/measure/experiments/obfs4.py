"""``obfs4://host:port?cert=B64&iat-mode=0``: does an obfs4 bridge complete its handshake?

The client half of obfs4's handshake (obfs4proxy ``doc/obfs4-spec.txt`` §4,
``transports/obfs4/handshake_ntor.go``, ``common/ntor/ntor.go``): an ephemeral X25519 key
sent as an Elligator 2 representative X', random padding, the mark M_C and MAC_C keyed by
the bridge's identity key B and node id (both from ``cert``). The bridge answers Y', its
ntor AUTH, padding, M_S and MAC_S. Reachable means MAC_S checked *and* AUTH verified: AUTH
is keyed by the ntor secret EXP(B, x), which only the holder of B's private key can compute,
so a DPI box (or any other server) cannot produce it. Nothing past the handshake is sent.

A bridge stays silent to a request whose MAC it cannot verify (a wrong ``cert``, or
probing), so a silent bridge is a timeout, exactly as when a censor drops the flow: only
the control tells them apart. ``iat-mode`` only shapes data after the handshake; it is
accepted (bridge lines carry it) and recorded.

The key is made as obfs4proxy >= 0.0.12 makes it (``internal/x25519ell2``): the X25519
public point plus a random low-order point, so that its representative decodes to a point
outside the prime-order subgroup as often as random bytes do; the two random top bits of
the representative are set too. The Elligator 2 maps are implemented here over
GF(2^255 - 19) with Python integers (no dependency offers them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kzprobe.measure.context import close_transport
from kzprobe.measure.experiments.endpoint import (
    Dialled,
    EndpointExperiment,
    Flow,
    Outcome,
    dial,
    protocol_failure,
)
from kzprobe.measure.experiments.tor import ooni_targets
from kzprobe.measure.params import decode_obfs4_cert
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import stream
from kzprobe.targets import Target

# --------------------------------------------------------------------------- GF(2^255-19)

P = 2**255 - 19
A = 486662  # Curve25519's Montgomery coefficient
D = -121665 * pow(121666, P - 2, P) % P  # edwards25519's d
SQRT_M1 = pow(2, (P - 1) // 4, P)
HALF_P = (P - 1) // 2


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


def _is_square(x: int) -> bool:
    """Euler's criterion (0 counts as a square)."""
    return pow(x, HALF_P, P) != P - 1


def sqrt(x: int) -> int | None:
    """A square root mod P (P = 5 mod 8: Atkin's variant), or None for a non-square."""
    x %= P
    root = pow(x, (P + 3) // 8, P)
    if root * root % P == x:
        return root
    root = root * SQRT_M1 % P
    return root if root * root % P == x else None


def forward(representative: int) -> int:
    """Elligator 2 direct map, r -> u, as the bridge decodes X' (Z = 2, as in obfs4)."""
    r = representative % P
    v = -A * _inv(1 + 2 * r * r) % P
    if _is_square((v * v * v + A * v * v + v) % P):
        return v
    return (-v - A) % P


def inverse(u: int, alternate: bool) -> int | None:
    """Elligator 2 inverse map, u -> r <= (p-1)/2, or None when u has no representative.

    Both ``alternate`` choices are representatives of u (they differ in the sign of v);
    obfs4 picks one at random.
    """
    u %= P
    product = -2 * u * (u + A) % P
    if product == 0 or not _is_square(product):
        return None
    ratio = (-(u + A) * _inv(2 * u) if alternate else -u * _inv(2 * (u + A))) % P
    root = sqrt(ratio)
    if root is None:
        return None
    return min(root, P - root)


# --------------------------------------------------------------------------- edwards25519

Point = tuple[int, int]  # affine (x, y) on -x^2 + y^2 = 1 + d x^2 y^2


def _edwards_add(p: Point, q: Point) -> Point:
    """The complete twisted Edwards addition law."""
    (x1, y1), (x2, y2) = p, q
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + y1 * x2) * _inv(1 + t) % P, (y1 * y2 + x1 * x2) * _inv(1 - t) % P)


def _order8_point() -> Point:
    """A point of order 8: x^2 = (1 + sqrt(1 + d)) / d, y = -x * sqrt(-1)."""
    s = sqrt(1 + D)
    assert s is not None
    for root in (s, P - s):
        x = sqrt((1 + root) * _inv(D))
        if x is not None:
            return x, -x * SQRT_M1 % P
    raise AssertionError("edwards25519 has points of order 8")


def _multiples(point: Point, count: int) -> tuple[Point, ...]:
    found, current = [], (0, 1)
    for _ in range(count):
        found.append(current)
        current = _edwards_add(current, point)
    return tuple(found)


LOW_ORDER = _multiples(_order8_point(), 8)  # the torsion subgroup, identity first


def add_low_order(u: int, index: int) -> int | None:
    """u of (the point with Montgomery u) + LOW_ORDER[index]; None if u is not on the curve.

    Either lift of u serves: the other gives u of P - T, also a point of the same coset.
    """
    y = (u - 1) * _inv(u + 1) % P
    x = sqrt((y * y - 1) * _inv(D * y * y + 1))
    if x is None:
        return None
    _, y2 = _edwards_add((x, y), LOW_ORDER[index % 8])
    return (1 + y2) * _inv(1 - y2) % P


def u_bytes(u: int) -> bytes:
    return u.to_bytes(32, "little")


def u_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "little")


def decode_representative(data: bytes) -> int:
    """u of a 32-byte representative; the top two bits are padding (masked, as obfs4)."""
    return forward(int.from_bytes(data[:31] + bytes([data[31] & 0x3F]), "little"))


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class SessionKey:
    """An ephemeral key, its public u as the bridge will decode it, and its representative."""

    private: X25519PrivateKey
    public: bytes
    representative: bytes


def session_key() -> SessionKey:
    """A fresh key whose (cofactor-dirtied) public u has a representative; about half do."""
    while True:
        private = X25519PrivateKey.generate()
        clean = u_from_bytes(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        tweak = secrets.randbits(8)
        u = add_low_order(clean, tweak >> 5)
        r = None if u is None else inverse(u, bool(tweak & 1))
        if u is None or r is None or forward(r) != u:
            continue
        encoded = bytearray(r.to_bytes(32, "little"))
        encoded[31] |= secrets.randbits(8) & 0xC0
        return SessionKey(private, u_bytes(u), bytes(encoded))


# --------------------------------------------------------------------------- handshake

PROTOID = b"ntor-curve25519-sha256-1"
T_MAC = PROTOID + b":mac"
T_VERIFY = PROTOID + b":key_verify"
MAX_HANDSHAKE = 8192
MARK_LEN = MAC_LEN = 16
REPR_LEN = AUTH_LEN = 32
SERVER_MIN = REPR_LEN + AUTH_LEN + MARK_LEN + MAC_LEN
# obfs4proxy's code derives 77 (server minimum + its 45-byte inline seed frame - 64); the
# spec text says 85: the larger satisfies a server built from either.
CLIENT_MIN_PAD = 85
CLIENT_MAX_PAD = MAX_HANDSHAKE - (REPR_LEN + MARK_LEN + MAC_LEN)  # 8128


@dataclass(frozen=True, slots=True)
class Bridge:
    """What ``cert`` says: the bridge's node id and its identity key B."""

    node_id: bytes
    identity: bytes

    @classmethod
    def from_cert(cls, cert: str) -> Bridge:
        """Unpadded standard base64 of NODEID | B (obfs4proxy's ``cert=``)."""
        raw = decode_obfs4_cert(cert)
        return cls(raw[:20], raw[20:])

    @property
    def mac_key(self) -> bytes:
        return self.identity + self.node_id


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def epoch_hour(now: float | None = None) -> bytes:
    """E: the hours since the Unix epoch, in ASCII decimal."""
    return str(int(time.time() if now is None else now) // 3600).encode()


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The request as sent, and what checking the reply needs."""

    key: SessionKey
    bridge: Bridge
    hour: bytes
    message: bytes
    padding: int


def client_hello(bridge: Bridge, key: SessionKey, padding: int, hour: bytes) -> ClientHello:
    """X' | P_C | M_C | MAC_C, with MAC_C = HMAC(B | NODEID, X' | P_C | M_C | E)[:16]."""
    mark = _hmac(bridge.mac_key, key.representative)[:MARK_LEN]
    body = key.representative + secrets.token_bytes(padding) + mark
    message = body + _hmac(bridge.mac_key, body + hour)[:MAC_LEN]
    return ClientHello(key, bridge, hour, message, padding)


def new_hello(bridge: Bridge) -> ClientHello:
    padding = CLIENT_MIN_PAD + secrets.randbelow(CLIENT_MAX_PAD - CLIENT_MIN_PAD + 1)
    return client_hello(bridge, session_key(), padding, epoch_hour())


def find_mark(reply: bytes, bridge: Bridge) -> int | None:
    """Offset of M_S (searched after Y' | AUTH, within the first 8192 bytes), once MAC_S
    after it has arrived too; None if not (yet) there."""
    if len(reply) < SERVER_MIN:
        return None
    mark = _hmac(bridge.mac_key, reply[:REPR_LEN])[:MARK_LEN]
    end = min(len(reply), MAX_HANDSHAKE)
    pos = reply.find(mark, REPR_LEN + AUTH_LEN, end)
    return pos if pos >= 0 and pos + MARK_LEN + MAC_LEN <= end else None


def reply_size(reply: bytes, bridge: Bridge) -> int | None:
    """Bytes of the server handshake, or all of them once 8192 bytes hold no mark."""
    pos = find_mark(reply, bridge)
    if pos is not None:
        return pos + MARK_LEN + MAC_LEN
    return len(reply) if len(reply) >= MAX_HANDSHAKE else None


def server_auth(hello: ClientHello, server_public: bytes) -> bytes | None:
    """The AUTH the real bridge computes (obfs4 ``ntorCommon``), None if a DH is degenerate.

    obfs4's ntor suffix is B | B | X | Y | PROTOID | NODEID (B twice; not tor's ntor order).
    """
    bridge, key = hello.bridge, hello.key
    try:
        shared = (key.private.exchange(X25519PublicKey.from_public_bytes(server_public))
                  + key.private.exchange(X25519PublicKey.from_public_bytes(bridge.identity)))
    except ValueError:  # an all-zero shared secret: a low-order point
        return None
    suffix = (bridge.identity + bridge.identity + key.public + server_public + PROTOID
              + bridge.node_id)
    verify = _hmac(T_VERIFY, shared + suffix)
    return _hmac(T_MAC, verify + suffix + b"Server")


def check_reply(hello: ClientHello, reply: bytes) -> str | None:
    """None when MAC_S and AUTH verify; else why not (a ``ProtocolError`` message)."""
    pos = find_mark(reply, hello.bridge)
    if pos is None:
        return "no obfs4 server mark (M_S) in the reply"
    mac = _hmac(hello.bridge.mac_key, reply[:pos + MARK_LEN] + hello.hour)[:MAC_LEN]
    if not hmac.compare_digest(mac, reply[pos + MARK_LEN:pos + MARK_LEN + MAC_LEN]):
        return "obfs4 server MAC (MAC_S) does not verify"
    expected = server_auth(hello, u_bytes(decode_representative(reply[:REPR_LEN])))
    if expected is None or not hmac.compare_digest(expected, reply[REPR_LEN:REPR_LEN + AUTH_LEN]):
        return "obfs4 AUTH does not verify: not the bridge's identity key"
    return None


# --------------------------------------------------------------------------- experiment


class Obfs4(EndpointExperiment):
    """obfs4 bridge reachability, recorded as OONI's ``tor`` test records an obfs4 target
    (``targets[...]["target_protocol"] == "obfs4"``)."""

    test_name = spec_for("obfs4").test_name  # the registry's, not repeated here
    test_version = spec_for("obfs4").test_version
    protocol_key = "x_obfs4_handshake"

    def finish(self, target: Target, keys: dict[str, Any]) -> dict[str, Any]:
        keys["targets"] = ooni_targets(target, keys, protocol="obfs4", name=None)
        return keys

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        try:
            return await _handshake(flow, conn)
        finally:
            await close_transport(conn.transport)


async def _handshake(flow: Flow, conn: Dialled) -> Outcome:
    bridge = Bridge.from_cert(flow.target.param("cert") or "")  # validated at load time
    hello = new_hello(bridge)
    reader = stream.StreamProtocol.adopt(conn.transport, conn.held)
    t0 = flow.clock.now()
    result = await stream.request(
        conn.transport, reader, hello.message, complete=lambda buf: reply_size(buf, bridge),
        timeout=flow.ctx.config.timeouts.tls, clock=flow.clock, address=conn.address,
        transaction_id=conn.tid)
    flow.events.extend(result.events)
    failure = result.failure
    if result.reply is not None:
        problem = check_reply(hello, result.reply)
        failure = protocol_failure(problem) if problem else None
    details = _details(flow, conn, hello, result, failure, t0)
    return Outcome(address=conn.address, failure=failure,
                   failed_operation="obfs4_handshake" if failure else None, details=details,
                   t0=conn.connect.t0, t=flow.clock.now())


def _details(flow: Flow, conn: Dialled, hello: ClientHello, result: stream.StreamExchange,
             failure: str | None, t0: float) -> dict[str, Any]:
    t = flow.clock.now()
    received = sum(e.num_bytes for e in result.events if e.operation == "read")
    return {
        "address": conn.address, "failure": failure, "t0": t0, "t": t,
        "handshake_time": round(t - t0, 6) if failure is None else None,
        "bytes_sent": len(hello.message), "client_padding": hello.padding,
        "bytes_received": received,
        "auth_verified": None if result.reply is None else failure is None,
        "node_id": hello.bridge.node_id.hex(), "iat_mode": flow.target.param("iat-mode"),
    }
