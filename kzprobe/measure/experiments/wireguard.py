"""``wireguard://host:port?public_key=B64``: does a WireGuard server complete a handshake?

A real Noise_IKpsk2 handshake initiation (WireGuard whitepaper §5.4.2, as in
wireguard-go ``noise-protocol.go``): a fresh ephemeral key per try, the initiator's
static key encrypted to the server's ``public_key``, a TAI64N timestamp, ``mac1``
keyed by the server's public key. Reachable when a handshake *response* arrives that
decrypts under the resulting keys (so it proves the server holds the private key).

WireGuard answers only peers it knows: a server stays silent to an unknown static key,
exactly as it does when a censor drops the packets. So for a verdict the operator
registers a monitoring peer on the server (no allowed IPs needed) and gives its private
key in ``private_key_file`` (and ``psk_file`` if the peer has a preshared key); without
one, a random static key is used and only the control can tell silence from blocking.
Key files are read (bounded) at measurement time and never recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kzprobe.errors import classify
from kzprobe.localfiles import LocalFileError, read_regular
from kzprobe.measure.experiments.endpoint import EndpointExperiment, Flow, Outcome
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import udp
from kzprobe.targets import Target

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
INITIATION_TYPE = 1
RESPONSE_TYPE = 2
RESPONSE_SIZE = 92
TAI64_BASE = 0x400000000000000A  # TAI64 label of the Unix epoch (wireguard-go tai64n)
MAX_KEY_FILE = 256


def blake_hash(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts), digest_size=32).digest()


def blake_mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    """HKDF with HMAC-BLAKE2s, ``n`` 32-byte outputs (the whitepaper's KDF_n)."""
    secret = _hmac(key, data)
    outputs, previous = [], b""
    for index in range(1, n + 1):
        previous = _hmac(secret, previous + bytes([index]))
        outputs.append(previous)
    return outputs


def aead(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(b"\x00" * 12, plaintext, associated)


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def tai64n(now: float | None = None) -> bytes:
    moment = time.time() if now is None else now
    seconds = int(moment)
    return struct.pack(">QI", TAI64_BASE + seconds, int((moment - seconds) * 1e9))


@dataclass(slots=True)
class Initiation:
    """One handshake initiation and the state needed to check its response."""

    server: bytes  # the responder's static public key
    static: X25519PrivateKey
    psk: bytes = b"\x00" * 32
    ephemeral: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    sender: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "little"))
    chain: bytes = b""
    hash: bytes = b""

    def message(self, now: float | None = None) -> bytes:
        """The 148-byte handshake initiation (mac2 zero: no cookie)."""
        chain = blake_hash(CONSTRUCTION)
        hashed = blake_hash(blake_hash(chain, IDENTIFIER), self.server)
        e_pub = raw_public(self.ephemeral)
        chain = kdf(chain, e_pub, 1)[0]
        hashed = blake_hash(hashed, e_pub)
        server = X25519PublicKey.from_public_bytes(self.server)
        chain, key = kdf(chain, self.ephemeral.exchange(server), 2)
        sealed_static = aead(key, raw_public(self.static), hashed)
        hashed = blake_hash(hashed, sealed_static)
        chain, key = kdf(chain, self.static.exchange(server), 2)
        sealed_time = aead(key, tai64n(now), hashed)
        self.chain, self.hash = chain, blake_hash(hashed, sealed_time)
        body = (struct.pack("<II", INITIATION_TYPE, self.sender) + e_pub + sealed_static
                + sealed_time)
        return body + blake_mac(blake_hash(LABEL_MAC1, self.server), body) + b"\x00" * 16

    def accepts(self, reply: bytes) -> bool:
        """A handshake response to this initiation that only the server's key could make."""
        if len(reply) != RESPONSE_SIZE or reply[:4] != struct.pack("<I", RESPONSE_TYPE):
            return False
        receiver = struct.unpack_from("<I", reply, 8)[0]
        mac1_key = blake_hash(LABEL_MAC1, raw_public(self.static))
        if receiver != self.sender or not hmac.compare_digest(
                blake_mac(mac1_key, reply[:60]), reply[60:76]):
            return False
        e_r = reply[12:44]
        peer = X25519PublicKey.from_public_bytes(e_r)
        chain = kdf(self.chain, e_r, 1)[0]
        hashed = blake_hash(self.hash, e_r)
        chain = kdf(chain, self.ephemeral.exchange(peer), 1)[0]
        chain = kdf(chain, self.static.exchange(peer), 1)[0]
        chain, tau, key = kdf(chain, self.psk, 3)
        try:
            ChaCha20Poly1305(key).decrypt(b"\x00" * 12, reply[44:60], blake_hash(hashed, tau))
        except InvalidTag:
            return False
        return True


def _read_key(path: str) -> bytes:
    try:  # a regular file only: a FIFO named in a target list must not block a thread
        data = read_regular(path, MAX_KEY_FILE, "WireGuard key file")
    except LocalFileError as exc:
        raise OSError(str(exc)) from None
    raw = base64.b64decode(data.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard key file holds one base64 32-byte key")
    return raw


async def _keys(target: Target) -> tuple[X25519PrivateKey, bytes]:
    """The static key (registered, or random) and the preshared key (or zeros)."""
    private_file, psk_file = target.param("private_key_file"), target.param("psk_file")
    static = (X25519PrivateKey.from_private_bytes(await asyncio.to_thread(_read_key, private_file))
              if private_file else X25519PrivateKey.generate())
    psk = await asyncio.to_thread(_read_key, psk_file) if psk_file else b"\x00" * 32
    return static, psk


class WireGuard(EndpointExperiment):
    """One WireGuard handshake per address (each retransmission a fresh initiation)."""

    test_name = spec_for("wireguard").test_name  # the registry's, not repeated here
    test_version = spec_for("wireguard").test_version
    protocol_key = "wireguard_handshake"

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        target, t0 = flow.target, flow.clock.now()
        address = udp.format_address(ip, target.port)
        try:
            static, psk = await _keys(target)
        except (OSError, ValueError) as exc:
            return Outcome(address=address, failure=classify(exc),
                           failed_operation="wireguard_keys", t0=t0, t=flow.clock.now())
        server = base64.b64decode(target.param("public_key") or "")
        sent: list[Initiation] = []

        def initiation(_: int) -> bytes:
            sent.append(Initiation(server=server, static=static, psk=psk))
            return sent[-1].message()

        result = await udp.exchange(
            ip, target.port, initiation, accept=lambda r: any(i.accepts(r) for i in sent),
            timeout=flow.ctx.config.timeouts.tls, clock=flow.clock,
            transaction_id=flow.transaction_id(), source=flow.ctx.source_address)
        flow.events.extend(result.events)
        details = {"address": address, "failure": result.failure, "t0": result.t0,
                   "t": result.t, "initiations": len(sent),
                   "registered_key": target.param("private_key_file") is not None}
        return Outcome(address=address, failure=result.failure,
                       failed_operation="wireguard_handshake" if result.failure else None,
                       details=details, t0=result.t0, t=result.t)
