"""Exceptions and the one map from exceptions to OONI failure strings.

Every probe reports failures through :func:`classify`; the vocabulary (OONI
df-007-errors) is named in :mod:`kzprobe.failures`. Classification looks at errno and the
exception type, not the class alone: a FIN during a TLS handshake can surface as a
``ConnectionResetError`` whose errno is None, and that is ``eof_error``, not a reset.
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl
import sys
from typing import TYPE_CHECKING

from kzprobe import failures

if TYPE_CHECKING:
    import aiohttp

FAILURE_INTERRUPTED = failures.INTERRUPTED  # the name engine and metrics import from here


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


class KzprobeError(Exception):
    """Base class for errors that stop kzprobe from running at all (not measurement failures).

    The message is printed as one line, so control characters from the input it quotes (a
    path with a newline in it, say) are escaped here, once, for every such error.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(str(message).translate(_CONTROL_ESCAPES))


class ConfigError(KzprobeError):
    """Invalid configuration; the message is one line naming file, key and problem."""


class TargetError(KzprobeError):
    """An unusable target list or target."""


class HttpFailure(Exception):
    """A measured HTTP-level failure that already has its OONI failure string."""

    def __init__(self, failure: str) -> None:
        super().__init__(failure)
        self.failure = failure


class QuicClosed(Exception):
    """A QUIC connection that ended with a CONNECTION_CLOSE (the peer's, or aioquic's own
    after a protocol error), as aioquic's ``ConnectionTerminated`` reports it."""

    def __init__(self, error_code: int, frame_type: int | None, reason: str, *,
                 established: bool, invalid_reply: bool = False) -> None:
        super().__init__(f"QUIC close 0x{error_code:x}: {reason}")
        self.error_code = error_code
        self.frame_type = frame_type  # None: an application (HTTP/3) close
        self.reason = reason
        self.established = established  # the handshake had completed
        self.invalid_reply = invalid_reply  # closed by us: the peer's HTTP/3 was malformed


_QUIC_CRYPTO_ERROR = 0x100  # RFC 9001 4.8: CRYPTO_ERROR + the TLS alert
_TLS_CERT_ALERTS = frozenset({42, 43, 44, 45, 46, 48})  # bad/unsupported/revoked/expired/...
_TLS_UNRECOGNIZED_NAME = 112


def _classify_quic(exc: QuicClosed) -> str:
    """aioquic's close reasons: a TLS alert as the ``ssl_*`` strings, an incomplete exchange
    after the handshake as ``eof_error``, a malformed HTTP/3 reply as invalid."""
    if exc.reason == "Idle timeout":
        return failures.GENERIC_TIMEOUT_ERROR
    if "common protocol version" in exc.reason:
        return failures.QUIC_INCOMPATIBLE_VERSION
    if exc.invalid_reply:
        return failures.HTTP_INVALID_RESPONSE
    alert = exc.error_code - _QUIC_CRYPTO_ERROR
    if exc.frame_type is not None and 0 <= alert < 0x100:
        if alert == _TLS_UNRECOGNIZED_NAME:
            return failures.SSL_INVALID_HOSTNAME
        if alert in _TLS_CERT_ALERTS:
            return _classify_cert_message(exc.reason.lower())
        return failures.SSL_FAILED_HANDSHAKE
    return failures.EOF_ERROR if exc.established else failures.SSL_FAILED_HANDSHAKE


def _classify_cert_message(message: str) -> str:
    """A verification failure from its message (aioquic gives no verify code)."""
    if "doesn't match" in message or "hostname" in message:
        return failures.SSL_INVALID_HOSTNAME
    if "issuer" in message or "self-signed" in message or "self signed" in message:
        return failures.SSL_UNKNOWN_AUTHORITY
    return failures.SSL_INVALID_CERTIFICATE


_ERRNO_FAILURES: dict[int, str] = {
    errno.ECONNREFUSED: failures.CONNECTION_REFUSED,
    errno.ECONNRESET: failures.CONNECTION_RESET,
    errno.ECONNABORTED: failures.CONNECTION_ABORTED,
    errno.EHOSTUNREACH: failures.HOST_UNREACHABLE,
    errno.ENETUNREACH: failures.NETWORK_UNREACHABLE,
    errno.ENETDOWN: failures.NETWORK_DOWN,
    errno.ENETRESET: failures.NETWORK_RESET,
    errno.ETIMEDOUT: failures.GENERIC_TIMEOUT_ERROR,
    errno.EADDRNOTAVAIL: failures.ADDRESS_NOT_AVAILABLE,
    errno.EADDRINUSE: failures.ADDRESS_IN_USE,
    errno.EAFNOSUPPORT: failures.ADDRESS_FAMILY_NOT_SUPPORTED,
    errno.EACCES: failures.PERMISSION_DENIED,
    errno.EPERM: failures.PERMISSION_DENIED,
    errno.EPIPE: failures.CONNECTION_RESET,
    errno.ENOBUFS: failures.NO_BUFFER_SPACE,
    errno.EINVAL: failures.INVALID_ARGUMENT,
}

# pycares status codes (ARES_E*) as exposed by aiodns.error.
_ARES_FAILURES: dict[int, str] = {
    1: failures.DNS_NO_ANSWER,  # ARES_ENODATA
    2: failures.DNS_SERVER_MISBEHAVING,  # ARES_EFORMERR
    3: failures.DNS_SERVFAIL_ERROR,  # ARES_ESERVFAIL
    4: failures.DNS_NXDOMAIN_ERROR,  # ARES_ENOTFOUND
    5: failures.DNS_SERVER_MISBEHAVING,  # ARES_ENOTIMP
    6: failures.DNS_REFUSED_ERROR,  # ARES_EREFUSED
    7: failures.DNS_SERVER_MISBEHAVING,  # ARES_EBADQUERY
    8: failures.DNS_SERVER_MISBEHAVING,  # ARES_EBADNAME
    10: failures.DNS_SERVER_MISBEHAVING,  # ARES_EBADRESP
    11: failures.CONNECTION_REFUSED,  # ARES_ECONNREFUSED
    12: failures.GENERIC_TIMEOUT_ERROR,  # ARES_ETIMEOUT
    13: failures.EOF_ERROR,  # ARES_EOF
    24: failures.INTERRUPTED,  # ARES_ECANCELLED
}

_IP_LIKE = re.compile(
    r"\[?(?:\d{1,3}\.){3}\d{1,3}\]?(?::\d+)?|\[?[0-9a-fA-F]*:[0-9a-fA-F:]{2,}\]?(?::\d+)?"
)


def scrub(message: str) -> str:
    """Remove addresses from free text so an unknown failure cannot leak the probe's IP."""
    return _IP_LIKE.sub("[scrubbed]", message)


def _classify_ssl(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = str(getattr(exc, "verify_message", "") or exc).lower()
        if code == 62 or "hostname mismatch" in message or "ip address mismatch" in message:
            return failures.SSL_INVALID_HOSTNAME
        if (
            code in (2, 19, 20, 21)
            or "issuer" in message
            or "self-signed" in message
            or "self signed" in message
        ):
            return failures.SSL_UNKNOWN_AUTHORITY
        return failures.SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return failures.EOF_ERROR
    reason = (exc.reason or "").upper()
    if "UNRECOGNIZED_NAME" in reason:
        return failures.SSL_INVALID_HOSTNAME
    if "UNEXPECTED_EOF" in reason:
        return failures.EOF_ERROR
    return failures.SSL_FAILED_HANDSHAKE


def _classify_os(exc: OSError) -> str | None:
    if exc.errno is not None and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        # errno None: asyncio's "Connection lost" from a FIN mid-handshake, not a real RST.
        return failures.EOF_ERROR if exc.errno is None else failures.CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return failures.CONNECTION_REFUSED
    if isinstance(exc, ConnectionAbortedError):
        return failures.CONNECTION_ABORTED
    return None


def _classify_http_message(message: str) -> str:
    """A response aiohttp's parser rejected: over its size limits, or malformed."""
    lowered = message.lower()
    if "too many headers" in lowered or "got more than" in lowered or "too long" in lowered:
        return failures.HTTP_HEADER_TOO_LARGE
    return failures.HTTP_INVALID_RESPONSE


def _classify_aiohttp(exc: aiohttp.ClientError) -> str | None:
    import aiohttp
    from aiohttp.http_exceptions import ContentEncodingError

    if isinstance(exc, aiohttp.ClientPayloadError) and isinstance(
            exc.__cause__, ContentEncodingError):
        return failures.HTTP_INVALID_RESPONSE  # a body that does not decode (bad gzip, br): no EOF
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return failures.EOF_ERROR
    if isinstance(exc, aiohttp.TooManyRedirects):
        return failures.HTTP_TOO_MANY_REDIRECTS
    if isinstance(exc, aiohttp.ClientResponseError):
        return _classify_http_message(str(exc.message))
    if isinstance(exc, aiohttp.ClientOSError | aiohttp.ClientConnectorError):
        cause = exc.__cause__ if isinstance(exc.__cause__, BaseException) else None
        if cause is not None:
            return classify(cause)
        return _classify_os(exc) or failures.CONNECT_ERROR
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return failures.GENERIC_TIMEOUT_ERROR
    return None


def _classify_http(exc: BaseException) -> str | None:
    """aiohttp's exceptions, looked up only once aiohttp is loaded (as aiodns's above): no
    exception of a library can exist before it is imported, and the analysis worker and
    the config code, which import this module, must not pay aiohttp's import (~0.26 s of
    CPU at every start of the worker)."""
    http_exceptions = sys.modules.get("aiohttp.http_exceptions")
    if http_exceptions is not None and isinstance(exc, http_exceptions.HttpProcessingError):
        return _classify_http_message(str(exc.message))  # raised bare by the Python parser
    client = sys.modules.get("aiohttp")
    if client is not None and isinstance(exc, client.ClientError):
        return _classify_aiohttp(exc)
    return None


def classify(exc: BaseException) -> str:
    """Map any exception raised while measuring to an OONI failure string."""
    if isinstance(exc, HttpFailure):
        return exc.failure
    if isinstance(exc, QuicClosed):
        return _classify_quic(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return failures.GENERIC_TIMEOUT_ERROR
    if isinstance(exc, asyncio.CancelledError):
        return failures.INTERRUPTED
    if isinstance(exc, asyncio.IncompleteReadError):
        return failures.EOF_ERROR
    dns_errors = sys.modules.get("aiodns.error")  # loaded or not: see _classify_http
    if dns_errors is not None and isinstance(exc, dns_errors.DNSError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
        return _ARES_FAILURES.get(code, failures.DNS_SERVER_MISBEHAVING)
    if isinstance(exc, ssl.SSLError):
        return _classify_ssl(exc)
    mapped = _classify_http(exc)
    if mapped is not None:
        return mapped
    if isinstance(exc, OSError):
        mapped = _classify_os(exc)
        if mapped is not None:
            return mapped
    if isinstance(exc, EOFError):
        return failures.EOF_ERROR
    return failures.unknown(scrub(type(exc).__name__ + ": " + str(exc))[:200])
