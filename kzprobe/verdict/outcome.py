"""What became of one measurement, in one word: the single definition the engine's sweep
summary and the metrics (``kzprobe_measurements_total``) share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kzprobe import failures

OK = "ok"
ANOMALY = "anomaly"
FAILURE = "failure"
INTERRUPTED = failures.INTERRUPTED  # the word a cut-short record's failure says
OUTCOMES = (OK, ANOMALY, FAILURE, INTERRUPTED)


def is_interrupted(record: Mapping[str, Any]) -> bool:
    """Cut short by shutdown: the final failure (a website's ``http_experiment_failure``,
    an endpoint's ``failure``) is ``interrupted``."""
    keys = record.get("test_keys") or {}
    return failures.INTERRUPTED in (keys.get("http_experiment_failure"), keys.get("failure"))


def outcome(record: Mapping[str, Any]) -> str:
    """``interrupted``, ``anomaly`` (an interference code, or OONI's ``blocking`` names a
    step), ``failure`` (a website's DNS or fetch failed, an endpoint was not reachable,
    with no evidence of interference) or ``ok``."""
    keys = record.get("test_keys") or {}
    if is_interrupted(record):
        return INTERRUPTED
    if keys.get("interference") or keys.get("blocking") not in (False, None):
        return ANOMALY
    if (keys.get("dns_experiment_failure") or keys.get("http_experiment_failure")
            or keys.get("failure") or keys.get("reachable") is False):
        return FAILURE
    return OK
