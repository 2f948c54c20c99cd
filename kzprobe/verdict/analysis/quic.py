"""HTTP/3 verdicts of web_connectivity: ``quic.*`` codes from ``quic_handshakes`` and the
``requests`` entries with ``network: "udp"``, judged with the control's own HTTP/3.

A QUIC failure alone proves nothing (many networks drop UDP/443 by accident, and most
sites have no HTTP/3): a code needs the control's QUIC handshake to the same address, or
its HTTP/3 fetch, to have succeeded. Without that evidence, no code. The TCP path is
judged by the other rules as before: a site reachable over HTTPS with QUIC blocked is
accessible with ``quic.timeout``. The codes are described in the README's "Verdicts".
Pure: records in, codes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kzprobe import failures
from kzprobe.verdict.analysis import records as r

CODES = ("quic.timeout", "quic.reset", "quic.eof", "quic.invalid")
QUIC_FAILURES = {
    failures.GENERIC_TIMEOUT_ERROR: "quic.timeout",  # datagrams dropped
    failures.CONNECTION_REFUSED: "quic.reset",  # an ICMP port unreachable
    failures.CONNECTION_RESET: "quic.reset",
    failures.EOF_ERROR: "quic.eof",  # closed after the handshake, before the response ended
    failures.SSL_FAILED_HANDSHAKE: "quic.invalid",  # a CONNECTION_CLOSE or junk in the handshake
    failures.QUIC_INCOMPATIBLE_VERSION: "quic.invalid",
    failures.HTTP_INVALID_RESPONSE: "quic.invalid",
}


@dataclass(frozen=True, slots=True)
class QuicControl:
    """The control's HTTP/3 view: handshakes per address, and whether its fetch worked
    (None: it did not try)."""

    handshakes: Mapping[str, bool] = field(default_factory=dict)
    http3_ok: bool | None = None


def _address(entry: Mapping[str, Any]) -> str | None:
    parts = r.split_endpoint(entry.get("address"))
    return None if parts is None else r.join_endpoint(*parts)


def read_quic_control(control: Mapping[str, Any] | None) -> QuicControl:
    """``quic_handshake`` and ``http3_request`` of a THResponse (empty when absent)."""
    if control is None:
        return QuicControl()
    shakes: dict[str, bool] = {}
    for address, value in r.mapping(control.get("quic_handshake")).items():
        parts = r.split_endpoint(address)
        if parts is not None and isinstance(value, Mapping):
            shakes[r.join_endpoint(*parts)] = value.get("status") is True
    http3 = control.get("http3_request")
    ok = None if not isinstance(http3, Mapping) else not isinstance(http3.get("failure"), str)
    return QuicControl(handshakes=shakes, http3_ok=ok)


def _control_shook(control: QuicControl, address: str | None) -> bool:
    """The control's handshake to this address worked (another address: its fetch did)."""
    known = control.handshakes.get(address or "")
    return known if known is not None else control.http3_ok is True


def udp_requests(test_keys: Mapping[str, Any]) -> list[r.Entry]:
    """The HTTP/3 requests of a web_connectivity record."""
    return [q for q in r.entries(test_keys.get("requests")) if q.get("network") == "udp"]


def quic_codes(test_keys: Mapping[str, Any], control: Mapping[str, Any] | None) -> set[str]:
    """Handshake failures where the control's handshake worked, and request failures after a
    working handshake where the control's HTTP/3 fetch worked."""
    seen = read_quic_control(control)
    codes: set[str] = set()
    ok_tids = set()
    for shake in r.entries(test_keys.get("quic_handshakes")):
        failure = r.failure(shake)
        if failure == "":
            ok_tids.add(shake.get("transaction_id"))
        elif (code := QUIC_FAILURES.get(failure)) and _control_shook(seen, _address(shake)):
            codes.add(code)
    for request in udp_requests(test_keys):
        code = QUIC_FAILURES.get(r.failure(request))
        if code and request.get("transaction_id") in ok_tids and seen.http3_ok is True:
            codes.add(code)
    return codes
