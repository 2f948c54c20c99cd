"""OONI keys and kzprobe interference codes for recorded-observation scenarios."""

from __future__ import annotations

import pytest

from kzprobe.verdict.analysis.fingerprints import FingerprintSet, load_fingerprints
from kzprobe.verdict.analysis.interference import CODES, AnalysisParams, interference, verdict_key
from kzprobe.verdict.analysis.webconnectivity import analyze

from .scenarios import Scenario, all_scenarios

SCENARIOS = all_scenarios()
PARAMS = AnalysisParams(throttle_min_seconds=2.0, throttle_factor=5.0, probe_cc="KZ")


@pytest.fixture(scope="module")
def fingerprints() -> FingerprintSet:
    return load_fingerprints()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_ooni_keys(scenario: Scenario) -> None:
    """The LTE keys are exactly the hand-derived ones (the rule key: test_dns_rule.py)."""
    got = analyze(scenario.keys, url=scenario.url).as_dict()
    got.pop("x_dns_consistency_rule")
    assert got == scenario.expected_ooni()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_interference(scenario: Scenario, fingerprints: FingerprintSet) -> None:
    """The codes are exactly the expected ones, and the named extras hold."""
    oo = analyze(scenario.keys, url=scenario.url)
    result = interference(scenario.keys, oo=oo, fingerprints=fingerprints, config=PARAMS,
                          url=scenario.url)
    assert result.codes == scenario.codes
    assert set(result.codes) <= set(CODES)
    produced = result.as_dict()
    for key, value in scenario.extra.items():
        assert produced[key] == value, key
    assert verdict_key(result) == (oo.blocking, scenario.codes)


def test_scenarios_cover_every_code() -> None:
    """Every code in the vocabulary has at least one scenario that produces it."""
    produced = {code for s in SCENARIOS for code in s.codes}
    assert produced == set(CODES)


def test_url_is_optional_for_interference(fingerprints: FingerprintSet) -> None:
    """Without the URL, the host is taken from the depth-0 lookups and the verdict is the same."""
    for scenario in SCENARIOS:
        oo = analyze(scenario.keys, url=scenario.url)
        with_url = interference(scenario.keys, oo=oo, fingerprints=fingerprints, config=PARAMS,
                                url=scenario.url)
        without = interference(scenario.keys, oo=oo, fingerprints=fingerprints, config=PARAMS)
        assert without.codes == with_url.codes, scenario.name
