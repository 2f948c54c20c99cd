"""wireguard:// against a real wireguard-go server: a registered peer completes the handshake."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from kzprobe.measure.experiments.wireguard import Initiation, kdf, raw_public
from tests.endpoints.censor import udp_relay
from tests.endpoints.conftest import Measure
from tests.endpoints.daemons import WireGuardServer


def _uri(server: WireGuardServer, port: int | None = None, key_file: object = None) -> str:
    uri = f"wireguard://127.0.0.1:{port or server.port}?public_key={server.public_key}"
    return uri + (f"&private_key_file={key_file}" if key_file else "")


def test_initiation_layout() -> None:
    """148 bytes: type 1, sender index, ephemeral, sealed static, sealed timestamp, macs."""
    server = X25519PrivateKey.generate()
    message = Initiation(server=raw_public(server), static=X25519PrivateKey.generate()).message()
    assert len(message) == 148 and message[:4] == b"\x01\x00\x00\x00"
    assert message[-16:] == b"\x00" * 16  # mac2: no cookie


def test_kdf_outputs_are_chained() -> None:
    """KDF_n gives n distinct 32-byte keys, the first independent of n."""
    one, = kdf(b"k" * 32, b"x", 1)
    a, b, c = kdf(b"k" * 32, b"x", 3)
    assert one == a and len({a, b, c}) == 3 and all(len(k) == 32 for k in (a, b, c))


def test_a_forged_response_is_rejected() -> None:
    """A response with the right indices but made without the server key does not verify."""
    server = X25519PrivateKey.generate()
    init = Initiation(server=raw_public(server), static=X25519PrivateKey.generate())
    init.message()
    forged = (b"\x02\x00\x00\x00" + b"\x07" * 4 + init.sender.to_bytes(4, "little")
              + raw_public(X25519PrivateKey.generate()) + b"\x00" * 48)
    assert not init.accepts(forged)
    assert not init.accepts(forged[:91])


async def test_registered_peer_completes_the_handshake(
        measure: Measure, wireguard_server: WireGuardServer) -> None:
    """wireguard-go answers a registered key; the response decrypts (the server holds its key)."""
    record = await measure(_uri(wireguard_server, key_file=wireguard_server.client_key_file))
    keys = record["test_keys"]
    assert record["test_name"] == "wireguard"
    assert keys["reachable"] is True and keys["failure"] is None
    shake = keys["wireguard_handshake"][0]
    assert shake["registered_key"] is True and shake["initiations"] >= 1
    assert str(wireguard_server.client_key_file) not in str(keys)  # key paths stay out
    assert base64.b64decode(wireguard_server.public_key)


async def test_unknown_key_gets_silence(measure: Measure,
                                        wireguard_server: WireGuardServer) -> None:
    """WireGuard ignores peers it does not know: an unregistered key times out."""
    keys = (await measure(_uri(wireguard_server, key_file=wireguard_server.other_key_file)))[
        "test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "generic_timeout_error"
    assert keys["wireguard_handshake"][0]["initiations"] == 3


async def test_missing_key_file_is_a_failure_not_a_crash(
        measure: Measure, wireguard_server: WireGuardServer, tmp_path: object) -> None:
    """An unreadable key file is recorded as the failure of the key step."""
    keys = (await measure(_uri(wireguard_server, key_file="/nonexistent/kz.key")))["test_keys"]
    assert keys["reachable"] is False and keys["failed_operation"] == "wireguard_keys"


async def test_udp_drop_without_a_helper_key_has_no_evidence(
        measure: Measure, wireguard_server: WireGuardServer, helper_url: str) -> None:
    """Dropped handshakes, and a helper with no registered key of its own: the probe's key
    file stays local (never sent), the helper's random key gets silence too, so there is no
    evidence and no interference code."""
    async with udp_relay(wireguard_server.port, drop=True) as relay:
        record = await measure(_uri(wireguard_server, relay.port,
                                    wireguard_server.client_key_file), helper_url=helper_url)
    keys = record["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "generic_timeout_error"
    assert relay.dropped >= 3
    assert keys["control_failure"] is None
    assert keys["control"]["x_endpoint"]["reachable"] is None  # the helper cannot judge
    assert str(wireguard_server.client_key_file) not in str(keys["control"])
    assert keys["interference"] == [] and keys["blocking"] is None


async def test_udp_drop_with_a_helper_key_is_wireguard_timeout(
        measure: Measure, wireguard_server: WireGuardServer, ca_file: Path) -> None:
    """A helper with its own registered key ([helper] wireguard_peers) completes the handshake
    from outside, so dropped handshakes here are wireguard.timeout."""
    from aiohttp import web

    from kzprobe.helper import HelperServer
    from tests.conftest import make_config

    from .censor import OUTSIDE

    config = make_config(ca_file=ca_file, helper={
        "allow_nets": ["127.0.0.0/8"], "bind_address": OUTSIDE, "allowed_ports": ["1-65535"],
        "wireguard_peers": [{"public_key": wireguard_server.public_key,
                             "private_key_file": str(wireguard_server.client_key_file)}]},
        timeouts={"connect": 2.0, "tls": 2.0}, analysis={"not_bogon": ["127.0.0.0/8"]})
    runner = web.AppRunner(HelperServer(config).app(), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    helper = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    try:
        async with udp_relay(wireguard_server.port, drop=True) as relay:
            record = await measure(_uri(wireguard_server, relay.port,
                                        wireguard_server.client_key_file), helper_url=helper)
    finally:
        await runner.cleanup()
    keys = record["test_keys"]
    assert keys["reachable"] is False
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["wireguard.timeout"]
