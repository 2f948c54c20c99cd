"""Exceptions and the one map from exceptions to OONI failure strings.

Every probe reports failures through :func:`classify`, so the vocabulary (OONI
df-007-errors) lives in exactly one place. Classification looks at errno and the
exception type, not the class alone: a FIN during a TLS handshake can surface as a
``ConnectionResetError`` whose errno is None, and that is ``eof_error``, not a reset.
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl

import aiodns.error
import aiohttp
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

FAILURE_TIMEOUT = "generic_timeout_error"
FAILURE_EOF = "eof_error"
FAILURE_RESET = "connection_reset"
FAILURE_REFUSED = "connection_refused"
FAILURE_INTERRUPTED = "interrupted"


class KzprobeError(Exception):
    """Base class for errors that stop kzprobe from running at all (not measurement failures)."""


class ConfigError(KzprobeError):
    """Invalid configuration; the message is one line naming file, key and problem."""


class TargetError(KzprobeError):
    """An unusable target list or target."""


class HttpFailure(Exception):
    """A measured HTTP-level failure that already has its OONI failure string."""

    def __init__(self, failure: str) -> None:
        super().__init__(failure)
        self.failure = failure


_ERRNO_FAILURES: dict[int, str] = {
    errno.ECONNREFUSED: FAILURE_REFUSED,
    errno.ECONNRESET: FAILURE_RESET,
    errno.ECONNABORTED: "connection_aborted",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "network_unreachable",
    errno.ENETDOWN: "network_down",
    errno.ENETRESET: "network_reset",
    errno.ETIMEDOUT: FAILURE_TIMEOUT,
    errno.EADDRNOTAVAIL: "address_not_available",
    errno.EADDRINUSE: "address_in_use",
    errno.EAFNOSUPPORT: "address_family_not_supported",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EPIPE: FAILURE_RESET,
    errno.ENOBUFS: "no_buffer_space",
    errno.EINVAL: "invalid_argument",
}

# pycares status codes (ARES_E*) as exposed by aiodns.error.
_ARES_FAILURES: dict[int, str] = {
    1: "dns_no_answer",  # ARES_ENODATA
    2: "dns_server_misbehaving",  # ARES_EFORMERR
    3: "dns_servfail_error",  # ARES_ESERVFAIL
    4: "dns_nxdomain_error",  # ARES_ENOTFOUND
    5: "dns_server_misbehaving",  # ARES_ENOTIMP
    6: "dns_refused_error",  # ARES_EREFUSED
    7: "dns_server_misbehaving",  # ARES_EBADQUERY
    8: "dns_server_misbehaving",  # ARES_EBADNAME
    10: "dns_server_misbehaving",  # ARES_EBADRESP
    11: "connection_refused",  # ARES_ECONNREFUSED
    12: FAILURE_TIMEOUT,  # ARES_ETIMEOUT
    13: FAILURE_EOF,  # ARES_EOF
    24: FAILURE_INTERRUPTED,  # ARES_ECANCELLED
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
            return "ssl_invalid_hostname"
        if (
            code in (2, 19, 20, 21)
            or "issuer" in message
            or "self-signed" in message
            or "self signed" in message
        ):
            return "ssl_unknown_authority"
        return "ssl_invalid_certificate"
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return FAILURE_EOF
    reason = (exc.reason or "").upper()
    if "UNRECOGNIZED_NAME" in reason:
        return "ssl_invalid_hostname"
    if "UNEXPECTED_EOF" in reason:
        return FAILURE_EOF
    return "ssl_failed_handshake"


def _classify_os(exc: OSError) -> str | None:
    if exc.errno is not None and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        # errno None: asyncio's "Connection lost" from a FIN mid-handshake, not a real RST.
        return FAILURE_EOF if exc.errno is None else FAILURE_RESET
    if isinstance(exc, ConnectionRefusedError):
        return FAILURE_REFUSED
    if isinstance(exc, ConnectionAbortedError):
        return "connection_aborted"
    return None


def _classify_http_message(message: str) -> str:
    """A response aiohttp's parser rejected: over its size limits, or malformed."""
    lowered = message.lower()
    if "too many headers" in lowered or "got more than" in lowered or "too long" in lowered:
        return "http_header_too_large"
    return "http_invalid_response"


def _classify_aiohttp(exc: aiohttp.ClientError) -> str | None:
    if isinstance(exc, aiohttp.ClientPayloadError) and isinstance(
            exc.__cause__, ContentEncodingError):
        return "http_invalid_response"  # a body that does not decode (bad gzip, br): no EOF
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return FAILURE_EOF
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "http_too_many_redirects"
    if isinstance(exc, aiohttp.ClientResponseError):
        return _classify_http_message(str(exc.message))
    if isinstance(exc, aiohttp.ClientOSError | aiohttp.ClientConnectorError):
        cause = exc.__cause__ if isinstance(exc.__cause__, BaseException) else None
        if cause is not None:
            return classify(cause)
        return _classify_os(exc) or "connect_error"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return FAILURE_TIMEOUT
    return None


def classify(exc: BaseException) -> str:
    """Map any exception raised while measuring to an OONI failure string."""
    if isinstance(exc, HttpFailure):
        return exc.failure
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return FAILURE_TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return FAILURE_INTERRUPTED
    if isinstance(exc, asyncio.IncompleteReadError):
        return FAILURE_EOF
    if isinstance(exc, aiodns.error.DNSError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
        return _ARES_FAILURES.get(code, "dns_server_misbehaving")
    if isinstance(exc, ssl.SSLError):
        return _classify_ssl(exc)
    if isinstance(exc, HttpProcessingError):  # raised bare by aiohttp's pure-Python parser
        return _classify_http_message(str(exc.message))
    if isinstance(exc, aiohttp.ClientError):
        mapped = _classify_aiohttp(exc)
        if mapped is not None:
            return mapped
    if isinstance(exc, OSError):
        mapped = _classify_os(exc)
        if mapped is not None:
            return mapped
    if isinstance(exc, EOFError):
        return FAILURE_EOF
    return f"unknown_failure: {scrub(type(exc).__name__ + ': ' + str(exc))[:200]}"
