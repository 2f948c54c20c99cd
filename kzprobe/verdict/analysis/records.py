"""Defensive readers for ``test_keys``.

Records are read back from disk and from other tools, so nothing here trusts a shape: a
value of the wrong type reads as missing, never as an exception.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from kzprobe.bogons import to_address
from kzprobe.netaddr import join_hostport, split_hostport

Entry = Mapping[str, Any]
EMPTY: Mapping[str, Any] = {}


def entries(value: Any) -> list[Entry]:
    """The mappings in a list (``queries``, ``tcp_connect`` ...); anything else is dropped."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def tcp_requests(test_keys: Mapping[str, Any]) -> list[Entry]:
    """``requests`` over TCP: the HTTP/3 ones (``network: "udp"``) are judged on their own."""
    return [q for q in entries(test_keys.get("requests")) if q.get("network") != "udp"]


def mapping(value: Any) -> Entry:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else EMPTY


def text(value: Any) -> str | None:
    """``value`` if it is a string."""
    return value if isinstance(value, str) else None


def failure(entry: Entry) -> str:
    """The entry's failure string; ``""`` means success (as OONI's minipipeline reads null)."""
    value = entry.get("failure")
    return value if isinstance(value, str) else ""


def number(value: Any) -> float | None:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def integer(value: Any, default: int = 0) -> int:
    """An int (not a bool), else ``default``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def tags(entry: Entry) -> tuple[str, ...]:
    """The entry's tags."""
    value = entry.get("tags")
    if not isinstance(value, list):
        return ()
    return tuple(tag for tag in value if isinstance(tag, str))


def tag_depth(entry: Entry) -> int | None:
    """The ``depth=N`` tag (the last one wins, as in OONI), or None."""
    result: int | None = None
    for tag in tags(entry):
        if tag.startswith("depth=") and tag[6:].lstrip("-").isdigit() and len(tag) < 26:
            result = int(tag[6:])
    return result


def tag_fetch_body(entry: Entry) -> bool | None:
    """The ``fetch_body=true|false`` tag, or None."""
    result: bool | None = None
    for tag in tags(entry):
        if tag.startswith("fetch_body="):
            result = tag == "fetch_body=true"
    return result


def body_bytes(value: Any) -> bytes:
    """A df-001 body: a UTF-8 string or ``{"format": "base64", "data": ...}``."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, Mapping) and value.get("format") == "base64":
        data = value.get("data")
        if isinstance(data, str):
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return b""
    return b""


def header_map(value: Any) -> dict[str, str]:
    """A ``headers`` mapping as ``{name: value}`` with string values (binary ones decoded)."""
    result: dict[str, str] = {}
    for key, item in mapping(value).items():
        if not isinstance(key, str):
            continue
        if isinstance(item, str):
            result[key] = item
        elif isinstance(item, Mapping):
            result[key] = body_bytes(item).decode("utf-8", "replace")
    return result


def canonical_ip(value: Any) -> str | None:
    """The canonical text of an IP address, or None if ``value`` is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _canonical_text(value)


@lru_cache(maxsize=8192)
def _canonical_text(value: str) -> str | None:
    address = to_address(value)
    return None if address is None else str(address)


join_endpoint = join_hostport  # ``ip:port``, IPv6 in brackets


def split_endpoint(address: Any) -> tuple[str, str] | None:
    """``(ip, port)``, the IP canonical, from ``ip:port`` or ``[ip]:port``; None if malformed."""
    parts = split_hostport(address) if isinstance(address, str) and len(address) <= 80 else None
    ip = canonical_ip(parts[0]) if parts else None
    return None if ip is None or parts is None else (ip, str(parts[1]))


def answer_addresses(query: Entry) -> list[str]:
    """The A/AAAA addresses of a df-002 query, in answer order (as OONI's minipipeline)."""
    result: list[str] = []
    for answer in entries(query.get("answers")):
        kind = answer.get("answer_type")
        value = {"A": answer.get("ipv4"), "AAAA": answer.get("ipv6")}.get(str(kind))
        if isinstance(value, str) and value:
            result.append(value)
    return result


def duration(entry: Entry) -> float | None:
    """``t - t0`` of an event, or None when either is missing or the result is negative."""
    start, end = number(entry.get("t0")), number(entry.get("t"))
    if start is None or end is None or end < start:
        return None
    return end - start
