"""Records in kzprobe's OONI shape, and segments written the ways the sink leaves them."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import zstandard

NETWORK_NAMES = {"AS9198": "JSC Kazakhtelecom", "AS206026": "Kcell JSC"}


def web(url: str, when: str, *, asn: str = "AS9198", category: str | None = "NEWS",
        blocking: str | bool | None = False, accessible: bool | None = True,
        interference: Sequence[str] = (), blockpage: str | None = None,
        mitm: str | None = None) -> dict[str, Any]:
    """A web_connectivity record with the verdict keys a report reads (and some it skips)."""
    keys = {
        "queries": [{"hostname": "x", "query_type": "A", "answers": [], "failure": None}],
        "tcp_connect": [], "tls_handshakes": [], "requests": [],
        "blocking": blocking, "accessible": accessible, "interference": list(interference),
        "blockpage": blockpage, "tls_mitm_issuer": mitm, "x_attempts": 1,
    }
    return _envelope(url, when, asn, category, "web_connectivity", keys)


def endpoint(url: str, when: str, *, asn: str = "AS9198", test_name: str = "openvpn",
             reachable: bool, interference: Sequence[str] = (),
             category: str | None = None) -> dict[str, Any]:
    """An endpoint record (openvpn, tor, ...): reachable/failure/interference, no blocking."""
    keys = {"reachable": reachable, "failure": None if reachable else "generic_timeout_error",
            "interference": list(interference)}
    return _envelope(url, when, asn, category, test_name, keys)


def _envelope(url: str, when: str, asn: str, category: str | None, test_name: str,
              keys: dict[str, Any]) -> dict[str, Any]:
    return {
        "annotations": {"engine_name": "kzprobe", "kzprobe_sweep": when[:13]},
        "input": url, "measurement_start_time": when, "test_start_time": when,
        "probe_asn": asn, "probe_cc": "KZ", "probe_network_name": NETWORK_NAMES.get(asn, ""),
        "probe_ip": "127.0.0.1", "resolver_ip": "127.0.0.53", "software_name": "kzprobe",
        "software_version": "0.1.0", "test_name": test_name, "test_version": "0.5.28",
        "test_runtime": 0.5, "category_code": category, "test_keys": keys,
    }


def lines(items: Iterable[dict[str, Any] | bytes]) -> bytes:
    """NDJSON: records serialised, raw bytes (corrupt lines) kept as they are."""
    out = bytearray()
    for item in items:
        out += item if isinstance(item, bytes) else orjson.dumps(item)
        out += b"\n"
    return bytes(out)


def write(path: Path, data: bytes) -> Path:
    """Write a segment, compressed as its name says (zstd in two frames, as appends make)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        half = data.index(b"\n") + 1
        zc = zstandard.ZstdCompressor()
        data = zc.compress(data[:half]) + zc.compress(data[half:])
    path.write_bytes(data)
    return path
