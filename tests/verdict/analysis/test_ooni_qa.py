"""kzprobe's LTE analysis reproduces OONI's keys on OONI's own QA measurements."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from kzprobe.verdict.analysis.webconnectivity import analyze

FIXTURE = Path(__file__).parent / "fixtures" / "ooni_qa_measurements.jsonl.gz"
COMPARED = ("dns_consistency", "blocking", "accessible", "x_blocking_flags", "x_dns_flags",
            "http_experiment_failure", "body_length_match", "body_proportion",
            "status_code_match", "headers_match", "title_match")


def _measurements() -> list[dict[str, Any]]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


MEASUREMENTS = _measurements()


def test_fixture_has_the_fifty_qa_cases() -> None:
    """The bundled QA set is complete, so a silently shrunk file cannot pass."""
    assert len(MEASUREMENTS) == 50
    assert {m["test_version"] for m in MEASUREMENTS} == {"0.5.28"}


@pytest.mark.parametrize("measurement", MEASUREMENTS, ids=[m["name"] for m in MEASUREMENTS])
def test_keys_match_ooni(measurement: dict[str, Any]) -> None:
    """Every LTE analysis key equals the value OONI's probe wrote for the same observations."""
    keys = measurement["test_keys"]
    got = analyze(keys, url=measurement["input"]).as_dict()
    assert {k: got[k] for k in COMPARED} == {k: keys[k] for k in COMPARED}


def test_qa_set_covers_every_blocking_value() -> None:
    """The comparison exercises each LTE verdict, not only the easy ones."""
    seen = {json.dumps(m["test_keys"]["blocking"]) for m in MEASUREMENTS}
    assert seen >= {'"dns"', '"tcp_ip"', '"http-failure"', '"http-diff"', "false", "null"}
