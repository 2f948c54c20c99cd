"""The analysis applied to one record's ``test_keys``: the one dispatch, inline or in the
worker process, and the fingerprints it needs (built once; the bundled sets plus local
files).

Kept apart from the pipeline so that the worker process imports only this: no scrubbing,
no retries, no measuring.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kzprobe.config import Config
from kzprobe.errors import ConfigError
from kzprobe.localfiles import LocalFileError, read_regular
from kzprobe.measure.registry import kind_of
from kzprobe.verdict.analysis import (
    AnalysisParams,
    FingerprintSet,
    analyze,
    endpoints,
    interference,
    load_fingerprints,
    verdict_key,
)
from kzprobe.verdict.analysis.fingerprints import (
    build_fingerprints,
    bundled_directory,
    read_all,
    read_ooni_csv,
)
from kzprobe.verdict.verdicts import EndpointVerdict, Verdict, WebVerdict

MAX_FINGERPRINT_BYTES = 16 * 1024 * 1024  # OONI's whole HTTP set is ~0.5 MiB


class Analyzer:
    """Applies OONI's keys and kzprobe's interference codes to measurements."""

    def __init__(self, config: Config, fingerprints: FingerprintSet | None = None) -> None:
        self.not_bogon = config.analysis.not_bogon
        self.params = AnalysisParams.from_config(config.analysis, probe_cc=config.probe.cc)
        if fingerprints is None:
            files = config.analysis.fingerprint_files
            fingerprints = with_local_fingerprints(files) if files else load_fingerprints()
        self.fingerprints = fingerprints

    def apply(self, test_keys: dict[str, Any], url: str) -> WebVerdict:
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
        return WebVerdict(*verdict_key(result))


def with_local_fingerprints(paths: Sequence[Path]) -> FingerprintSet:
    """The bundled sets plus local OONI-format CSVs (a blockpage seen only in one ISP)."""
    return with_signatures(read_local_fingerprints(paths))


def with_signatures(local: list[Any]) -> FingerprintSet:
    """The bundled sets plus local signatures already read."""
    return build_fingerprints(read_all(bundled_directory()) + local)


def read_local_fingerprints(paths: Sequence[Path]) -> list[Any]:
    """The signatures of local fingerprint CSVs (ConfigError naming a bad one); cheap, so a
    daemon that judges in its worker still checks them before any socket exists."""
    signatures: list[Any] = []
    for path in paths:
        try:  # a regular file, read bounded (a FIFO or /dev/zero is refused, not waited on)
            data = read_regular(path, MAX_FINGERPRINT_BYTES, "fingerprint file")
            signatures += read_ooni_csv(data.decode("utf-8-sig"))
        except (LocalFileError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{path}: cannot read fingerprints: {exc}") from None
    return signatures


def judge(analyzer: Analyzer, test_name: str, test_keys: dict[str, Any], url: str) -> Verdict:
    """Fill ``test_keys``'s verdict keys in place; the one dispatch, inline or in the worker,
    by the kind the registry gives ``test_name`` (ValueError for one it does not know)."""
    kind = kind_of(test_name)
    if kind == "endpoint":
        return EndpointVerdict(*endpoints.apply(test_keys))
    if kind == "web":
        return analyzer.apply(test_keys, url)
    raise ValueError(f"no experiment registered with test_name {test_name!r}")
