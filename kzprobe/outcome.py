"""What became of one measurement, in one word: the single definition the engine's sweep
summary and the metrics share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kzprobe.errors import FAILURE_INTERRUPTED


def is_interrupted(record: Mapping[str, Any]) -> bool:
    """Cut short by shutdown: the final failure (a website's ``http_experiment_failure``,
    an endpoint's ``failure``) is ``interrupted``."""
    keys = record.get("test_keys") or {}
    return FAILURE_INTERRUPTED in (keys.get("http_experiment_failure"), keys.get("failure"))
