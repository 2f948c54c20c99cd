"""The fuzz targets, run for a fixed number of inputs: atheris (coverage-guided, in a
subprocess) when it is installed, and always a fixed hypothesis run of the same checks."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_targets import check_csv, check_ndjson

HERE = Path(__file__).parent
RUNS = {"csv": 5000, "ndjson": 5000}  # a few seconds each on one core


@pytest.mark.parametrize("target", sorted(RUNS))
def test_atheris_finds_no_crash(target: str, tmp_path: Path) -> None:
    """A seeded, coverage-guided run of N inputs ends without a crash."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris, the 'test' extra)")
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "seeds" / target, corpus)  # libFuzzer adds its finds here
    result = subprocess.run(
        [sys.executable, str(HERE / "fuzz_targets.py"), target, f"-atheris_runs={RUNS[target]}",
         "-seed=1", "-max_total_time=100", str(corpus)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {RUNS[target]} " in result.stderr


ROWS = st.lists(st.one_of(
    st.sampled_from(["url,category_code,category_description,date_added,source,notes",
                     "http://a.test/,NEWS,,,,", "\ufeff", "#", '"', '""', ",,,,,",
                     "https://[::1]:0/,X,,,,", "http://xn--zz.test/,X,,,,",
                     "tls://h.test:443?sni=a.test,ANON,,,,", "\r", "\x00"]),
    st.text(max_size=40)), max_size=8).map("\r\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(ROWS.map(lambda text: text.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=300)))
def test_csv_reader_on_any_bytes(data: bytes) -> None:
    """Any target-list bytes: targets and file:line warnings, or one TargetError line."""
    check_csv(data)


LINES = st.lists(st.one_of(
    st.sampled_from([b'{"a":1}', b"[]", b"{", b"", b"\xff\xfe", b'{"x":"\\ud800"}', b"null",
                     b'{"a":1}' * 3, b"\x00", b"{" * 600 + b"}" * 600]),
    st.binary(max_size=40)), max_size=10).map(b"\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(LINES, LINES.map(lambda b: b + b"\n"), st.binary(max_size=300)))
def test_segment_reader_on_any_bytes(data: bytes) -> None:
    """Any segment bytes, plain, gzip or corrupt gzip: records and reported errors only."""
    check_ndjson(data)
