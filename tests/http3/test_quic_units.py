"""The pure parts of HTTP/3: Alt-Svc parsing, aioquic closes -> failure strings, the
[http3] section, and the THRequest's x_quic_enabled."""

from __future__ import annotations

import pytest

from kzprobe import failures
from kzprobe.config import ConfigError, parse_config
from kzprobe.errors import QuicClosed, classify
from kzprobe.measure.control import th_request
from kzprobe.measure.steps.quic import advertised_h3


@pytest.mark.parametrize(("value", "port"), [
    ('h3=":443"; ma=86400', 443),
    ('h3-29=":8443", h3=":4433"; ma=60; persist=1', 4433),
    ("h3=:443", 443),
    ('h2=":443"', None),
    ('h3="other.example:443"', None),  # another host: not the URL's
    ('h3=":0"', None),
    ('h3=":99999"', None),
    ("clear", None),
    ("", None),
])
def test_alt_svc_h3_port(value: str, port: int | None) -> None:
    assert advertised_h3(value) == port


def test_alt_svc_reading_is_bounded() -> None:
    assert advertised_h3("h2=x, " * 10_000 + 'h3=":443"') is None


CRYPTO = 0x100  # + the TLS alert
CRYPTO_FRAME = 6


@pytest.mark.parametrize(("closed", "failure"), [
    (QuicClosed(CRYPTO + 42, CRYPTO_FRAME, "hostname 'a' doesn't match 'b'", established=False),
     failures.SSL_INVALID_HOSTNAME),
    (QuicClosed(CRYPTO + 42, CRYPTO_FRAME, "unable to get local issuer certificate",
                established=False), failures.SSL_UNKNOWN_AUTHORITY),
    (QuicClosed(CRYPTO + 45, CRYPTO_FRAME, "certificate has expired", established=False),
     failures.SSL_INVALID_CERTIFICATE),
    (QuicClosed(CRYPTO + 112, CRYPTO_FRAME, "", established=False),
     failures.SSL_INVALID_HOSTNAME),
    (QuicClosed(CRYPTO + 40, CRYPTO_FRAME, "handshake failure", established=False),
     failures.SSL_FAILED_HANDSHAKE),
    (QuicClosed(0x1, None, "", established=False), failures.SSL_FAILED_HANDSHAKE),
    (QuicClosed(0x100, None, "bye", established=True), failures.EOF_ERROR),  # H3_NO_ERROR
    (QuicClosed(0x101, None, "", established=True, invalid_reply=True),
     failures.HTTP_INVALID_RESPONSE),
    (QuicClosed(0, None, "Idle timeout", established=True), failures.GENERIC_TIMEOUT_ERROR),
    (QuicClosed(1, None, "Could not find a common protocol version", established=False),
     failures.QUIC_INCOMPATIBLE_VERSION),
])
def test_aioquic_closes_map_to_ooni_failures(closed: QuicClosed, failure: str) -> None:
    assert classify(closed) == failure


def test_http3_section() -> None:
    assert parse_config({}).config.http3.always is False
    assert parse_config({"http3": {"always": True}}).config.http3.always is True
    with pytest.raises(ConfigError, match=r"\[http3\].*always|http3.always"):
        parse_config({"http3": {"always": "yes"}})


def test_th_request_asks_for_http3_on_https_only() -> None:
    assert th_request("https://a.example/", [])["x_quic_enabled"] is True
    assert "x_quic_always" not in th_request("https://a.example/", [])
    assert th_request("https://a.example/", [], quic_always=True)["x_quic_always"] is True
    plain = th_request("http://a.example/", [], quic_always=True)
    assert plain["x_quic_enabled"] is False and "x_quic_always" not in plain
