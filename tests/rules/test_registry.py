"""Every kind of target in the registry is known to every consumer of it.

A kind of target is one :class:`~kzprobe.measure.registry.ExperimentSpec`. For each spec:
its example URI parses (targets), the engine's loader picks its experiment (with the
spec's test name and version), judging accepts its ``test_name`` as the spec's kind, the
outcome and the metrics count a failed record of it as a failure, and
docs/record-format.md documents its ``test_name``. The last tests show the checks are not
vacuous: a spec nobody knows fails every one, a registered but undocumented one only the
documentation's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from kzprobe import failures
from kzprobe.config import Config
from kzprobe.measure import registry
from kzprobe.measure.experiments.endpoint import TcpConnect
from kzprobe.measure.loader import experiment_for
from kzprobe.measure.registry import SPECS, ExperimentSpec, kind_of
from kzprobe.ops.metrics import Metrics, Reading
from kzprobe.record import build_record
from kzprobe.targets import Target, parse_target
from kzprobe.verdict import outcome as outcomes
from kzprobe.verdict import worker
from kzprobe.verdict.pipeline import Analyzer
from tests.rules.source import ROOT

DOCS = ROOT / "docs" / "record-format.md"
Check = Callable[[ExperimentSpec], Iterator[str]]


@cache
def _analyzer() -> Analyzer:
    return Analyzer(Config())


def _uris(spec: ExperimentSpec) -> list[str]:
    """The example URI under each of the spec's schemes."""
    rest = spec.example_uri.partition("://")[2]
    return [f"{scheme}://{rest}" for scheme in spec.schemes]


def _targets(spec: ExperimentSpec) -> Iterator[str]:
    for uri in _uris(spec):
        try:
            target = parse_target(uri)
        except ValueError as exc:
            yield f"example URI {uri!r} does not parse: {exc}"
            continue
        if target.is_endpoint != (spec.kind == "endpoint"):
            yield f"{uri!r} parses as the wrong kind"


def _engine(spec: ExperimentSpec) -> Iterator[str]:
    for scheme in spec.schemes:
        try:
            experiment = experiment_for(scheme)
        except (KeyError, ImportError, AttributeError) as exc:
            yield f"no experiment for {scheme}://: {exc!r}"
            continue
        named = f"{type(experiment).__module__}:{type(experiment).__name__}"
        if named != spec.experiment:
            yield f"{scheme}:// runs {named}, not {spec.experiment}"
        if (experiment.test_name, experiment.test_version) != (spec.test_name,
                                                               spec.test_version):
            yield f"{named} records {experiment.test_name} {experiment.test_version}"


def _failed_record(spec: ExperimentSpec) -> tuple[Target, dict[str, Any]]:
    """A record of this kind that ran out of time (the engine's failure shape), judged."""
    target = parse_target(spec.example_uri)
    keys = experiment_for(target.scheme).failure_keys(target, failures.GENERIC_TIMEOUT_ERROR)
    worker.judge(_analyzer(), spec.test_name, keys, target.url)
    record = build_record(target=target, config=Config(), test_name=spec.test_name,
                          test_version=spec.test_version, test_keys=keys, started=0.0,
                          runtime=1.0)
    return target, record


def _judging(spec: ExperimentSpec) -> Iterator[str]:
    if kind_of(spec.test_name) != spec.kind:
        yield f"judging takes {spec.test_name} as {kind_of(spec.test_name)}, not {spec.kind}"
    try:
        _failed_record(spec)
    except Exception as exc:
        yield f"judging a {spec.test_name} record fails: {exc!r}"


def _reading() -> Reading:
    return Reading(in_flight=0, queue_depth=0, rate_limit_waits=0, records_written=0,
                   bytes_written=0, write_errors=0, segments_rotated=0, segments_compressed=0,
                   writer_blocked=False, targets=0, loop_lag=0.0, loop_lag_max=0.0)


def _metrics(spec: ExperimentSpec) -> Iterator[str]:
    try:
        _, record = _failed_record(spec)
    except Exception as exc:
        yield f"no judged record of {spec.test_name}: {exc!r}"
        return
    if outcomes.outcome(record) != outcomes.FAILURE:
        yield f"a timed-out {spec.test_name} record is {outcomes.outcome(record)!r}"
    metrics = Metrics(_reading)
    metrics.observe(record)
    counted = metrics.registry.get_sample_value("kzprobe_measurements_total",
                                                {"result": outcomes.FAILURE})
    if counted != 1:
        yield f"the metrics count a timed-out {spec.test_name} record as no failure"


def _docs(spec: ExperimentSpec) -> Iterator[str]:
    if not re.search(rf'`"?{re.escape(spec.test_name)}"?`', DOCS.read_text()):
        yield f"docs/record-format.md does not name test_name `{spec.test_name}`"


CONSUMERS: dict[str, Check] = {"targets": _targets, "engine": _engine, "judging": _judging,
                               "metrics": _metrics, "docs": _docs}


def _problems(spec: ExperimentSpec) -> dict[str, list[str]]:
    found = {name: list(check(spec)) for name, check in CONSUMERS.items()}
    return {name: problems for name, problems in found.items() if problems}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.schemes[0])
def test_every_consumer_knows_every_kind_of_target(spec: ExperimentSpec) -> None:
    """Targets, engine, judging, outcome/metrics and the record docs all know this kind."""
    assert _problems(spec) == {}


def test_schemes_and_test_names_are_unambiguous() -> None:
    """A scheme belongs to one spec; specs sharing a test_name share its kind and version."""
    schemes = [scheme for spec in SPECS for scheme in spec.schemes]
    assert len(schemes) == len(set(schemes))
    for spec in SPECS:
        assert kind_of(spec.test_name) == spec.kind
        assert {s.test_version for s in SPECS if s.test_name == spec.test_name} == {
            spec.test_version}


class _FakeProbe(TcpConnect):
    """A new kind of target: registered in the tests below, documented nowhere."""

    test_name = "fakeprobe"
    test_version = "0.0.1"


FAKE = ExperimentSpec(schemes=("fake",), test_name="fakeprobe", test_version="0.0.1",
                      experiment=f"{__name__}:_FakeProbe", kind="endpoint",
                      example_uri="fake://192.0.2.1:9")


def test_a_kind_nobody_knows_fails_every_check() -> None:
    """Not vacuous: each consumer's check reports a spec missing from it."""
    assert set(_problems(FAKE)) == set(CONSUMERS)


def test_a_kind_missing_from_one_consumer_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered (so parsing, loading, judging and counting know it) but undocumented:
    only the documentation check fails, and it names the test_name."""
    monkeypatch.setitem(registry._BY_SCHEME, "fake", FAKE)
    monkeypatch.setitem(registry._KIND_OF_TEST, "fakeprobe", "endpoint")
    experiment_for.cache_clear()
    try:
        assert _problems(FAKE) == {
            "docs": ["docs/record-format.md does not name test_name `fakeprobe`"]}
        mislabelled = replace(FAKE, test_version="9.9.9")  # the class records 0.0.1
        assert set(_problems(mislabelled)) == {"engine", "docs"}
    finally:
        experiment_for.cache_clear()
