"""``tor://host:port?fingerprint=HEX``: does a Tor relay's OR port speak Tor's link protocol?

OONI's ``tor`` experiment stops at TCP+TLS for OR ports; this goes one step further,
as a Tor client does (tor-spec §4): TLS handshake (self-signed link certificate, so not
verified but recorded; SNI a random ``www.<letters>.com`` like tor's own), then a
``VERSIONS`` cell, and the relay's ``VERSIONS`` and ``CERTS`` cells read back. The RSA
identity certificate in ``CERTS`` gives the relay's fingerprint (SHA-1 of its PKCS#1
public key), checked against ``fingerprint`` when given: a TLS server that is not the
relay (a DPI box terminating TLS) cannot produce it.

A link handshake that is reset, stalls or gets EOF is tried once more to the same address
with the benign SNI (``x_sni_checks``, as for ``tls://``): if that one reaches the relay,
the blocking keys on the name (tor's ``www.<random>.com`` pattern), not on the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import string
import struct
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kzprobe.measure.context import close_transport
from kzprobe.measure.experiments.endpoint import (
    Dialled,
    EndpointExperiment,
    Flow,
    Outcome,
    dial,
    protocol_failure,
    secure,
    sni_check,
)
from kzprobe.measure.flow import needs_sni_check
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import stream
from kzprobe.targets import Target

CMD_VERSIONS = 7
CMD_CERTS = 129
LINK_VERSIONS = (3, 4, 5)
FIXED_PAYLOAD = 509
CERT_RSA_IDENTITY = 2


def versions_cell() -> bytes:
    """VERSIONS is always sent with a 2-byte circuit id (tor-spec §4.1)."""
    payload = b"".join(struct.pack("!H", v) for v in LINK_VERSIONS)
    return struct.pack("!HBH", 0, CMD_VERSIONS, len(payload)) + payload


def random_sni() -> str:
    letters = random.choices(string.ascii_lowercase + string.digits, k=random.randint(8, 20))
    return f"www.{''.join(letters)}.com"


def _cell_at(buffer: bytes, offset: int, circ_len: int) -> tuple[int, bytes, int] | None:
    """(command, payload, next offset) of the cell at ``offset``, or None if incomplete."""
    head = offset + circ_len
    if len(buffer) < head + 1:
        return None
    command = buffer[head]
    if command == CMD_VERSIONS or command >= 128:
        if len(buffer) < head + 3:
            return None
        size = struct.unpack_from("!H", buffer, head + 1)[0]
        start = head + 3
    else:
        size, start = FIXED_PAYLOAD, head + 1
    if len(buffer) < start + size:
        return None
    return command, buffer[start:start + size], start + size


@dataclass(frozen=True, slots=True)
class LinkReply:
    """The relay's first cells: its link versions and, when present, its CERTS payload."""

    versions: tuple[int, ...]
    certs: bytes | None
    size: int


def parse_reply(buffer: bytes) -> LinkReply | None:
    """VERSIONS, then cells up to CERTS; None while incomplete (caller bounds the wait)."""
    if len(buffer) >= 3 and buffer[:3] != b"\x00\x00" + bytes([CMD_VERSIONS]):
        return LinkReply((), None, len(buffer))  # not a Tor relay's first cell: judge now
    first = _cell_at(buffer, 0, 2)
    if first is None:
        return None
    command, payload, offset = first
    if command != CMD_VERSIONS:
        return LinkReply((), None, offset)
    versions = tuple(struct.unpack(f"!{len(payload) // 2}H", payload[: len(payload) // 2 * 2]))
    common = set(versions) & set(LINK_VERSIONS)
    if not common:
        return LinkReply(versions, None, offset)
    circ_len = 4 if max(common) >= 4 else 2
    for _ in range(8):  # CERTS comes second; tolerate a few padding cells before it
        cell = _cell_at(buffer, offset, circ_len)
        if cell is None:
            return None
        command, payload, offset = cell
        if command == CMD_CERTS:
            return LinkReply(versions, payload, offset)
    return LinkReply(versions, None, offset)


def identity_fingerprint(certs: bytes) -> str | None:
    """Upper-case hex SHA-1 of the RSA identity key in a CERTS payload (tor-spec §4.2)."""
    if not certs:
        return None
    offset = 1
    for _ in range(certs[0]):
        if offset + 3 > len(certs):
            return None
        kind, size = certs[offset], struct.unpack_from("!H", certs, offset + 1)[0]
        body = certs[offset + 3:offset + 3 + size]
        offset += 3 + size
        if kind == CERT_RSA_IDENTITY:
            try:
                key = x509.load_der_x509_certificate(body).public_key()
                der = key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
            except ValueError:
                return None
            return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return None


def _complete(buffer: bytes) -> int | None:
    reply = parse_reply(buffer)
    return None if reply is None else reply.size


def _judge(reply: LinkReply, expected: str | None) -> tuple[str | None, str | None]:
    """(failure, fingerprint) for the relay's reply."""
    if not reply.versions:
        return protocol_failure("no Tor VERSIONS cell in reply"), None
    if not set(reply.versions) & set(LINK_VERSIONS):
        return protocol_failure("no common Tor link protocol version"), None
    fingerprint = identity_fingerprint(reply.certs or b"")
    if fingerprint is None:
        return protocol_failure("no RSA identity in the Tor CERTS cell"), None
    if expected and fingerprint != expected.upper():
        return protocol_failure("Tor relay identity does not match the fingerprint"), fingerprint
    return None, fingerprint


def ooni_targets(target: Target, keys: dict[str, Any], *, protocol: str,
                 name: str | None) -> dict[str, Any]:
    """OONI ``tor``'s ``targets`` map for one endpoint (``or_port``, ``obfs4``, ...)."""
    return {target.input: {
        "target_address": keys["endpoint"], "target_protocol": protocol,
        "target_name": name, "failure": keys["failure"],
        "tcp_connect": keys["tcp_connect"], "tls_handshakes": keys["tls_handshakes"],
        "network_events": keys["network_events"]}}


class Tor(EndpointExperiment):
    """Tor OR-port reachability, one record per ``tor://`` endpoint (OONI ``tor`` shape)."""

    test_name = spec_for("tor").test_name  # the registry's, not repeated here
    test_version = spec_for("tor").test_version
    protocol_key = "x_tor_link"

    def finish(self, target: Target, keys: dict[str, Any]) -> dict[str, Any]:
        keys["targets"] = ooni_targets(target, keys, protocol="or_port",
                                       name=target.param("fingerprint"))
        return keys

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        sni = flow.target.param("sni") or random_sni()
        shake, tls_transport = await secure(flow, conn, server_name=sni, verify=False)
        if tls_transport is None:
            if needs_sni_check(shake):
                await sni_check(flow, ip)
            return Outcome(address=conn.address, failure=shake.failure,
                           failed_operation="tls_handshake", t0=conn.connect.t0, t=shake.t)
        try:
            return await _link(flow, conn, tls_transport)
        finally:
            await close_transport(tls_transport)


async def _link(flow: Flow, conn: Dialled, transport: asyncio.Transport) -> Outcome:
    t0 = flow.clock.now()
    reader = stream.StreamProtocol.adopt(transport, conn.held)
    result = await stream.request(
        transport, reader, versions_cell(), complete=_complete,
        timeout=flow.ctx.config.timeouts.tls, clock=flow.clock, address=conn.address,
        transaction_id=conn.tid)
    flow.events.extend(result.events)
    failure, fingerprint = result.failure, None
    versions: tuple[int, ...] = ()
    if result.reply is not None:
        reply = parse_reply(result.reply) or LinkReply((), None, 0)
        versions = reply.versions
        failure, fingerprint = _judge(reply, flow.target.param("fingerprint"))
    expected = flow.target.param("fingerprint")
    details: dict[str, Any] = {
        "address": conn.address, "failure": failure, "t0": t0, "t": flow.clock.now(),
        "link_versions": list(versions), "fingerprint": fingerprint,
        "fingerprint_match": None if not (expected and fingerprint)
        else fingerprint == expected.upper(),
    }
    return Outcome(address=conn.address, failure=failure,
                   failed_operation="tor_link" if failure else None, details=details,
                   t0=conn.connect.t0, t=flow.clock.now())
