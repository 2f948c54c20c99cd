"""URI parameter validators and the host-name encoding they share with targets.

Pure (no I/O library): the experiment registry names these validators in each kind of
target's :class:`~kzprobe.measure.registry.ExperimentSpec`, and the registry is read by
targets and the analysis. A validator returns the normalised value or raises ValueError.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import string
from collections.abc import Callable
from pathlib import PurePosixPath

import idna

from kzprobe.bogons import parse_ip_loose

Validator = Callable[[str], str]
MAX_NAME_BYTES = 253  # DNS


# WHATWG URL "forbidden domain code points": C0 controls, space, DEL and these.
_FORBIDDEN_HOST = frozenset(chr(c) for c in range(0x21)) | frozenset('\x7f#%/:<>?@[\\]^|')


def _ends_in_a_number(host: str) -> bool:
    """WHATWG's ends-in-a-number checker: then the host is IPv4, or invalid."""
    last = host.split(".")[-1]
    if not last:
        return False
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and all(c in string.hexdigits for c in last[2:])


def encode_host(host: str) -> str:
    """A host as a browser reads it, in ASCII (punycode): IPv4 forms normalised, a
    name ending in a number refused; ValueError (or an IDNA error) says why."""
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    loose = parse_ip_loose(host)
    if loose is not None:  # 2130706433, 0177.0.0.1, 0x7f.1: what browsers dial, normalised
        return str(loose)
    if _ends_in_a_number(host):  # 256.0.0.1, 1.2.3.4.5, foo.123: no DNS name either
        raise ValueError(f"{host!r} ends in a number but is not a valid IPv4 address")
    if any(c in _FORBIDDEN_HOST for c in host):
        raise ValueError(f"forbidden character in host {host!r}")
    if host.isascii():
        labels = host.lower().split(".")
        if any(label.startswith("xn--") for label in labels):
            idna.decode(host)  # validates the punycode
        elif not all(labels) or any(len(label) > 63 for label in labels):
            raise ValueError(f"invalid host name {host!r}")
        return _bounded(host.lower())
    return _bounded(idna.encode(host, uts46=True).decode("ascii"))


def _bounded(name: str) -> str:
    if len(name) > MAX_NAME_BYTES:
        raise ValueError(f"host name longer than {MAX_NAME_BYTES} bytes")
    return name


def check_host_param(value: str) -> str:
    return encode_host(value)  # on the wire (SNI) as punycode, like the target host


def check_bool(value: str) -> str:
    if value not in ("0", "1", "true", "false"):
        raise ValueError("expected 0, 1, true or false")
    return value


def check_fingerprint(value: str) -> str:
    if len(value) != 40 or any(c not in string.hexdigits for c in value):
        raise ValueError("expected 40 hex digits (the relay's RSA identity fingerprint)")
    return value.upper()


def check_key32(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected standard base64") from None
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte key, got {len(raw)} bytes")
    return value


OBFS4_CERT_BYTES = 52  # NODEID (20) | B (32)


def decode_obfs4_cert(value: str) -> bytes:
    """obfs4proxy's ``cert``: base64 (padding optional) of NODEID (20) | B (32)."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64 (the bridge line's cert=); this is not base64") \
            from None
    if len(raw) != OBFS4_CERT_BYTES:
        raise ValueError(f"expected {OBFS4_CERT_BYTES} bytes (node id and public key), "
                         f"got {len(raw)} bytes")
    return raw


def check_obfs4_cert(value: str) -> str:
    """Valid, and unpadded as in bridge lines."""
    decode_obfs4_cert(value)
    return value.rstrip("=")


def check_iat_mode(value: str) -> str:
    if value not in ("0", "1", "2"):
        raise ValueError("expected 0, 1 or 2")
    return value


def check_abs_path(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError("expected an absolute path")
    return value
