"""The ``quic.*`` codes from recorded HTTP/3 observations, without a network: a QUIC failure
is a code only where the control's HTTP/3 succeeded, and never changes the TCP verdict."""

from __future__ import annotations

from typing import Any

import pytest

from kzprobe import failures
from kzprobe.verdict.analysis.fingerprints import FingerprintSet, load_fingerprints
from kzprobe.verdict.analysis.interference import AnalysisParams, interference
from kzprobe.verdict.analysis.quic import quic_codes, read_quic_control
from kzprobe.verdict.analysis.webconnectivity import analyze

from .builders import Record
from .quic_scenarios import add_h3, control_h3
from .scenarios import PAGE, REAL, REAL2, URL, H, full_control, https_flow

PARAMS = AnalysisParams(probe_cc="KZ")


@pytest.fixture(scope="module")
def fingerprints() -> FingerprintSet:
    return load_fingerprints()


def _site(handshake: str | None = None, request: str | None = None) -> Record:
    """HTTPS fine (control too); then HTTP/3 as given."""
    rec = Record(URL).dns(H, (REAL,))
    txid = https_flow(rec)
    rec.http(txid, URL, REAL, 443, body=PAGE)
    full_control(rec)
    return add_h3(rec, REAL, H, URL, handshake=handshake, request=request)


def _codes(keys: dict[str, Any], fingerprints: FingerprintSet) -> tuple[str, ...]:
    oo = analyze(keys, url=URL)
    return interference(keys, oo=oo, fingerprints=fingerprints, config=PARAMS, url=URL).codes


def test_udp_dropped_while_control_quic_works_is_quic_timeout(fingerprints) -> None:
    keys = control_h3(_site(failures.GENERIC_TIMEOUT_ERROR), REAL, H, ok=True).keys
    assert _codes(keys, fingerprints) == ("quic.timeout",)
    oo = analyze(keys, url=URL)
    assert (oo.blocking, oo.accessible) == (False, True)  # the TCP path decides OONI's keys


def test_quic_failure_without_control_http3_is_no_code(fingerprints) -> None:
    """OONI's helpers answer no HTTP/3 (and the control may fail it too): no evidence."""
    not_tried = control_h3(_site(failures.GENERIC_TIMEOUT_ERROR), REAL, H, ok=True, tried=False)
    failed_too = control_h3(_site(failures.CONNECTION_REFUSED), REAL, H, ok=False)
    no_control = _site(failures.GENERIC_TIMEOUT_ERROR).control_failed()
    for rec in (not_tried, failed_too, no_control):
        assert _codes(rec.keys, fingerprints) == ()


def test_other_address_falls_back_to_the_controls_fetch() -> None:
    """The control's handshakes went to other addresses (a CDN): its HTTP/3 fetch decides."""
    rec = control_h3(_site(failures.GENERIC_TIMEOUT_ERROR), REAL2, H, ok=True)
    assert quic_codes(rec.keys, rec.keys["control"]) == {"quic.timeout"}
    rec = control_h3(_site(failures.GENERIC_TIMEOUT_ERROR), REAL2, H, ok=False)
    assert quic_codes(rec.keys, rec.keys["control"]) == set()


def test_request_failure_needs_a_working_handshake_and_the_controls_fetch() -> None:
    rec = control_h3(_site(None, failures.GENERIC_TIMEOUT_ERROR), REAL, H, ok=True)
    assert quic_codes(rec.keys, rec.keys["control"]) == {"quic.timeout"}
    rec = control_h3(_site(None, failures.HTTP_INVALID_RESPONSE), REAL, H, ok=True)
    assert quic_codes(rec.keys, rec.keys["control"]) == {"quic.invalid"}
    rec = control_h3(_site(None, failures.EOF_ERROR), REAL, H, ok=False)
    assert quic_codes(rec.keys, rec.keys["control"]) == set()


def test_certificate_failures_are_not_quic_codes() -> None:
    """A bad certificate over QUIC is not one of the quic.* mechanisms (tls.mitm judges
    the TCP path's chain)."""
    rec = control_h3(_site(failures.SSL_UNKNOWN_AUTHORITY), REAL, H, ok=True)
    assert quic_codes(rec.keys, rec.keys["control"]) == set()


def test_http3_requests_do_not_enter_the_tcp_verdict(fingerprints) -> None:
    """A failed HTTP/3 GET is not an http.* code and does not make the site inaccessible."""
    keys = control_h3(_site(None, failures.CONNECTION_RESET), REAL, H, ok=True).keys
    assert _codes(keys, fingerprints) == ("quic.reset",)
    oo = analyze(keys, url=URL)
    assert oo.accessible is True and oo.http_experiment_failure is None


def test_read_quic_control_of_odd_answers() -> None:
    assert read_quic_control(None).http3_ok is None
    odd = read_quic_control({"quic_handshake": {"bad": 1, "1.2.3.4:443": "x"},
                             "http3_request": "nope"})
    assert (dict(odd.handshakes), odd.http3_ok) == ({}, None)
