"""From observations to a recorded verdict: analysis, retries, and privacy scrubbing.

The analysis itself is pure (``kzprobe.analysis``); this module applies it to a
measurement's ``test_keys``, decides whether a blocked-looking result must be measured
again (one lost packet is not censorship), and removes the probe's public IP from the
record before it is stored.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kzprobe.analysis import (
    AnalysisParams,
    FingerprintSet,
    analyze,
    interference,
    load_fingerprints,
    verdict_key,
)
from kzprobe.analysis.fingerprints import (
    build_fingerprints,
    bundled_directory,
    read_all,
    read_ooni_csv,
)
from kzprobe.config import Config
from kzprobe.errors import ConfigError
from kzprobe.localfiles import LocalFileError, read_regular

Verdict = tuple[Any, tuple[str, ...]]
SCRUBBED = "[scrubbed]"
MAX_FINGERPRINT_BYTES = 16 * 1024 * 1024  # OONI's whole HTTP set is ~0.5 MiB
_NOT_SCRUBBED = frozenset({"peer_certificates"})  # certificates are evidence, kept intact


class Analyzer:
    """Applies OONI's keys and kzprobe's interference codes to measurements."""

    def __init__(self, config: Config, fingerprints: FingerprintSet | None = None) -> None:
        self.not_bogon = config.analysis.not_bogon
        self.params = AnalysisParams.from_config(config.analysis, probe_cc=config.probe.cc)
        if fingerprints is None:
            files = config.analysis.fingerprint_files
            fingerprints = with_local_fingerprints(files) if files else load_fingerprints()
        self.fingerprints = fingerprints

    def apply(self, test_keys: dict[str, Any], url: str) -> Verdict:
        """Fill the verdict keys of ``test_keys`` in place; return the verdict's identity."""
        ooni = analyze(test_keys, url=url, not_bogon=self.not_bogon)
        measured_failure = test_keys.get("http_experiment_failure")
        test_keys.update(ooni.as_dict())
        if test_keys.get("http_experiment_failure") is None:
            # LTE derives it from a failing event; failures with no event of their own
            # (a redirect limit, an unusable Location) keep what the probe recorded.
            test_keys["http_experiment_failure"] = measured_failure
        result = interference(test_keys, oo=ooni, fingerprints=self.fingerprints,
                              config=self.params, url=url)
        test_keys.update(result.as_dict())
        return verdict_key(result)


def with_local_fingerprints(paths: Sequence[Path]) -> FingerprintSet:
    """The bundled sets plus local OONI-format CSVs (a blockpage seen only in one ISP)."""
    signatures = read_all(bundled_directory())
    for path in paths:
        try:  # a regular file, read bounded (a FIFO or /dev/zero is refused, not waited on)
            data = read_regular(path, MAX_FINGERPRINT_BYTES, "fingerprint file")
            signatures += read_ooni_csv(data.decode("utf-8-sig"))
        except (LocalFileError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{path}: cannot read fingerprints: {exc}") from None
    return build_fingerprints(signatures)


def looks_blocked(verdict: Verdict) -> bool:
    """Worth re-measuring: OONI says blocked, or any interference code was set."""
    blocking, codes = verdict
    return bool(codes) or blocking not in (False, None)


def choose(verdicts: Sequence[Verdict]) -> tuple[int, int]:
    """Index of the attempt whose verdict most attempts share (latest on ties), and how many."""
    counts = Counter(verdicts)
    best = max(counts.values())
    index = max(i for i, v in enumerate(verdicts) if counts[v] == best)
    return index, best


def _scrub_text(text: str, needles: Sequence[str]) -> str:
    for needle in needles:
        if needle in text:
            text = text.replace(needle, SCRUBBED)
    return text


def _scrub_binary(value: Mapping[str, Any], needles: Sequence[str]) -> dict[str, Any]:
    try:
        raw = base64.b64decode(value["data"], validate=True)
    except (ValueError, TypeError):
        return dict(value)
    for needle in needles:
        raw = raw.replace(needle.encode(), SCRUBBED.encode())
    return {"format": "base64", "data": base64.b64encode(raw).decode("ascii")}


def scrub(value: Any, needles: Sequence[str]) -> Any:
    """Replace every occurrence of the probe's public IP(s), as OONI's scrubber does."""
    if isinstance(value, str):
        return _scrub_text(value, needles)
    if isinstance(value, list):
        return [scrub(item, needles) for item in value]
    if isinstance(value, dict):
        if value.get("format") == "base64" and isinstance(value.get("data"), str):
            return _scrub_binary(value, needles)
        return {_scrub_text(key, needles) if isinstance(key, str) else key:
                item if key in _NOT_SCRUBBED else scrub(item, needles)
                for key, item in value.items()}
    return value


def public_ips(config: Config, test_keys: Mapping[str, Any]) -> list[str]:
    """The probe's public addresses: configured, and as seen by a kzprobe helper.

    Loopback and unspecified addresses are never a public IP (and scrubbing them would
    erase the addresses of local test servers), so they are left alone.
    """
    found = [config.probe.public_ip] if config.probe.public_ip else []
    control = test_keys.get("control")
    if isinstance(control, Mapping) and isinstance(control.get("x_client_ip"), str):
        found.append(control["x_client_ip"])
    keep = []
    for ip in found:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified) and ip not in keep:
            keep.append(ip)
    return keep


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping) and isinstance(body.get("data"), str):
        try:
            return base64.b64decode(body["data"])
        except ValueError:
            return b""
    return b""


def drop_bodies(test_keys: Mapping[str, Any]) -> None:
    """Replace response bodies by their length and SHA-256 (``output.store_bodies``)."""
    for request in test_keys.get("requests") or []:
        response = request.get("response") if isinstance(request, dict) else None
        if not isinstance(response, dict) or not response.get("body"):
            continue
        raw = _body_bytes(response["body"])
        response["body"] = ""
        response["x_body_sha256"] = hashlib.sha256(raw).hexdigest()
        response["x_body_length"] = len(raw)


def keep_bodies(mode: str, verdict: Verdict) -> bool:
    """``always``; ``never``; ``anomalous``: only when the verdict is not plainly fine."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    blocking, codes = verdict
    return bool(codes) or blocking is not False
