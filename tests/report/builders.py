"""Records in kzprobe's OONI shape, and segments written the ways the sink leaves them."""

from __future__ import annotations

import gzip
import hashlib
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


def target_event(kind: str, url: str, at: str, *, to: tuple[str, Sequence[str]],
                 frm: tuple[str, Sequence[str]] = ("ok", ()), asn: str = "AS9198",
                 probe_id: str = "vps1", seq: int = 1, group: str = "watch",
                 **extra: Any) -> dict[str, Any]:
    """A target's change event as the alert tracker writes it (SPEC16), ``at`` ISO with Z."""
    return {
        "event_version": 1, "event_id": f"{probe_id}-{seq}-{_hash8(url + kind + at)}",
        "seq": seq, "kind": kind, "input": url, "group": group, "probe_cc": "KZ",
        "probe_asn": asn, "probe_id": probe_id, "category_code": "GRP",
        "from": {"state": frm[0], "interference": list(frm[1])},
        "to": {"state": to[0], "interference": list(to[1])},
        "at": at, "confirmed_at": at, "sni_blocking_confirmed": None, "blockpage": None,
        "evidence": [{"measurement_uid": f"uid-{seq}", "measurement_start_time": at,
                      "sweep": "s"}],
        "summary": f"{url} {kind}", **extra,
    }


def network_event(kind: str, at: str, *, frm: str, to: str, asn: str = "AS9198",
                  probe_id: str = "vps1", seq: int = 1) -> dict[str, Any]:
    """A network-state event (issue 17): no input, scope "network", anchors as evidence."""
    return {
        "event_version": 1, "event_id": f"{probe_id}-{seq}-net{seq:05x}", "seq": seq,
        "kind": kind, "input": None, "scope": "network", "group": None, "probe_cc": "KZ",
        "probe_asn": asn, "probe_id": probe_id, "category_code": None,
        "from": {"state": frm, "interference": []}, "to": {"state": to, "interference": []},
        "at": at, "confirmed_at": at,
        "evidence": [{"anchor": "https://www.example.com/", "scope": "international",
                      "failure": "generic_timeout_error"}],
        "summary": f"network {to}",
    }


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
