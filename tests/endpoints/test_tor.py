"""tor:// against a real (private, loopback-only) Tor bridge relay, and through an SNI filter."""

from __future__ import annotations

import asyncio
import ssl

import trustme
from oonidata.dataclient import load_measurement

from kzprobe.measure.experiments.tor import (
    LINK_VERSIONS,
    identity_fingerprint,
    parse_reply,
    versions_cell,
)
from tests.endpoints.censor import tcp_filter
from tests.endpoints.conftest import Measure
from tests.endpoints.daemons import TorRelay


def test_versions_cell_layout() -> None:
    """VERSIONS: 2-byte circuit id 0, command 7, length, then 16-bit versions."""
    cell = versions_cell()
    assert cell[:5] == b"\x00\x00\x07\x00" + bytes([2 * len(LINK_VERSIONS)])
    assert cell[5:] == b"\x00\x03\x00\x04\x00\x05"


def test_incomplete_reply_waits_and_wrong_command_is_judged() -> None:
    """A partial VERSIONS cell is incomplete; a non-VERSIONS first cell is a complete, bad reply."""
    assert parse_reply(b"\x00\x00\x07\x00\x04\x00") is None
    bad = parse_reply(b"\x00\x00\x08" + b"\x00" * 509)
    assert bad is not None and bad.versions == ()
    assert identity_fingerprint(b"\x01\x02\x00\x05abc") is None


async def test_relay_speaks_the_link_protocol(measure: Measure, tor_relay: TorRelay) -> None:
    """TLS, VERSIONS and CERTS from a real tor; the identity matches its fingerprint."""
    uri = f"tor://127.0.0.1:{tor_relay.port}?fingerprint={tor_relay.fingerprint.lower()}"
    record = await measure(uri)
    keys = record["test_keys"]
    assert record["test_name"] == "tor"
    assert keys["reachable"] is True and keys["failure"] is None
    link = keys["x_tor_link"][0]
    assert link["fingerprint"] == tor_relay.fingerprint and link["fingerprint_match"] is True
    assert set(link["link_versions"]) & {4, 5}
    assert keys["tls_handshakes"][0]["peer_certificates"]  # the link certificate, recorded
    assert keys["targets"][uri]["target_protocol"] == "or_port"
    parsed = load_measurement(msmt=record)  # OONI's tor model reads it
    assert parsed.test_keys.targets[uri].failure is None


async def test_wrong_fingerprint_is_not_reachable(measure: Measure, tor_relay: TorRelay) -> None:
    """A relay whose identity is not the expected one fails the link step."""
    keys = (await measure(f"tor://127.0.0.1:{tor_relay.port}?fingerprint={'A' * 40}"))[
        "test_keys"]
    assert keys["reachable"] is False and keys["failed_operation"] == "tor_link"
    assert keys["x_tor_link"][0]["fingerprint_match"] is False


async def test_a_plain_tls_server_is_not_a_relay(measure: Measure, ca: trustme.CA) -> None:
    """A TLS server that does not speak Tor (a terminating DPI box) fails the link step."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("relay.test").configure_cert(context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        keys = (await measure(f"tor://127.0.0.1:{port}"))["test_keys"]
    assert keys["reachable"] is False and keys["failed_operation"] == "tor_link"
    assert keys["failure"].startswith("unknown_failure: ProtocolError")


async def test_reset_on_sni_is_tls_reset(measure: Measure, tor_relay: TorRelay,
                                         helper_url: str) -> None:
    """An SNI filter resetting Tor's www.*.com names: tls.reset, the control got through."""
    async with tcp_filter(tor_relay.port, rules={"*.com": "reset"}) as box:
        record = await measure(f"tor://127.0.0.1:{box.address[1]}", helper_url=helper_url)
    keys = record["test_keys"]
    assert keys["reachable"] is False and keys["failure"] == "connection_reset"
    assert keys["failed_operation"] == "tls_handshake"
    assert keys["control"]["x_endpoint"]["reachable"] is True
    assert keys["interference"] == ["tls.reset"]
    assert [(c["server_name"], c["failure"]) for c in keys["x_sni_checks"]] == [
        ("benign.test", None)]  # the benign SNI reached the relay: the name is blocked


async def test_reset_on_every_name_is_tcp_reset(measure: Measure, tor_relay: TorRelay,
                                                helper_url: str) -> None:
    """RST whatever the SNI (the benign one too): aimed at the address, so tcp.reset."""
    async with tcp_filter(tor_relay.port, default="reset") as box:
        keys = (await measure(f"tor://127.0.0.1:{box.address[1]}", helper_url=helper_url)
                )["test_keys"]
    assert keys["failure"] == "connection_reset" and keys["failed_operation"] == "tls_handshake"
    assert [c["failure"] for c in keys["x_sni_checks"]] == ["connection_reset"]
    assert keys["interference"] == ["tcp.reset"] and keys["blocking"] == "tcp_ip"


async def test_blackhole_on_tor_names_is_proved_by_the_benign_sni(measure: Measure,
                                                                 tor_relay: TorRelay) -> None:
    """Tor's names blackholed, the benign SNI answered: tls.timeout even without a control."""
    async with tcp_filter(tor_relay.port, rules={"*.com": "blackhole"}) as box:
        keys = (await measure(f"tor://127.0.0.1:{box.address[1]}"))["test_keys"]
    assert keys["failure"] == "generic_timeout_error" and keys["control"] is None
    assert [c["failure"] for c in keys["x_sni_checks"]] == [None]
    assert keys["interference"] == ["tls.timeout"]


async def test_blackholed_relay_without_control_has_no_code(measure: Measure,
                                                           tor_relay: TorRelay) -> None:
    """Every name blackholed and no control: both timeouts recorded, no interference claimed."""
    async with tcp_filter(tor_relay.port, default="blackhole") as box:
        keys = (await measure(f"tor://127.0.0.1:{box.address[1]}"))["test_keys"]
    assert keys["failure"] == "generic_timeout_error" and keys["interference"] == []
    assert [c["failure"] for c in keys["x_sni_checks"]] == ["generic_timeout_error"]


async def test_reachable_relay_needs_no_sni_check(measure: Measure, tor_relay: TorRelay) -> None:
    """A link handshake that completes is not repeated with the benign SNI."""
    keys = (await measure(f"tor://127.0.0.1:{tor_relay.port}"))["test_keys"]
    assert keys["reachable"] is True and keys["x_sni_checks"] == []
