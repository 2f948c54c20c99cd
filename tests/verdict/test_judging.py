"""The analysis worker process: same verdicts as inline analysis, and its failures are data."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from kzprobe.config import parse_config
from kzprobe.verdict.analyzer import Analyzer
from kzprobe.verdict.pipeline import Pipeline
from kzprobe.verdict.verdicts import WebVerdict
from kzprobe.verdict.worker import (
    MAX_FRAME,
    MAX_STARTS,
    ProcessJudge,
    WorkerGone,
    failure_of,
    frame,
    judge,
    take_frames,
)
from tests.verdict.analysis.scenarios import all_scenarios
from tests.verdict.analysis.test_ooni_qa import MEASUREMENTS

CONFIG = parse_config({"analysis": {"not_bogon": ["127.0.0.0/8"]}}).config


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Every recorded scenario (each interference code) and OONI's 50 QA measurements."""
    cases = [("web_connectivity", s.url, s.keys) for s in all_scenarios()]
    cases += [("web_connectivity", m["input"], m["test_keys"]) for m in MEASUREMENTS]
    return cases


async def test_worker_verdicts_equal_inline_verdicts() -> None:
    """Through the worker, every case gets byte-identical test keys and the same verdict."""
    analyzer, worker = Analyzer(CONFIG), ProcessJudge(CONFIG, timeout=30.0)
    cases = _cases()
    try:
        remote = await asyncio.gather(*(worker.judge(name, copy.deepcopy(keys), url)
                                        for name, url, keys in cases))
    finally:
        await worker.aclose()
    codes_seen = set()
    for (name, url, keys), (remote_keys, remote_verdict) in zip(cases, remote, strict=True):
        local_keys = copy.deepcopy(keys)
        local_verdict = judge(analyzer, name, local_keys, url)
        assert remote_verdict == local_verdict
        assert orjson.dumps(remote_keys, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            local_keys, option=orjson.OPT_SORT_KEYS)
        codes_seen.update(local_verdict.interference)
    assert len(cases) > 70 and len(codes_seen) > 15 and worker.started == 1


async def test_worker_that_dies_is_replaced() -> None:
    """A killed worker fails only the requests it held; the next request starts a new one."""
    worker = ProcessJudge(CONFIG, timeout=30.0)
    name, url, keys = _cases()[0]
    try:
        await worker.judge(name, copy.deepcopy(keys), url)
        assert worker._transport is not None
        worker._transport.kill()
        await asyncio.wait_for(asyncio.shield(worker._link.closed), 10)  # type: ignore[union-attr]
        _, verdict = await worker.judge(name, copy.deepcopy(keys), url)
    finally:
        await worker.aclose()
    assert worker.started == 2 and verdict == WebVerdict(False, ())


async def test_answer_later_than_the_timeout_kills_the_worker() -> None:
    """No answer within worker_timeout: the request fails with a timeout, the worker is killed."""
    worker = ProcessJudge(CONFIG, timeout=0.001)  # start-up alone takes longer
    name, url, keys = _cases()[0]
    try:
        with pytest.raises(TimeoutError) as caught:
            await worker.judge(name, copy.deepcopy(keys), url)
        assert worker._link is not None
        await asyncio.wait_for(asyncio.shield(worker._link.closed), 10)
        assert worker._transport is not None and worker._transport.get_returncode() != 0
    finally:
        await worker.aclose()
    assert failure_of(caught.value) == "generic_timeout_error"


async def test_analysis_exception_in_the_worker_is_a_failure_string() -> None:
    """A record the analysis cannot take comes back as an OONI-style failure, worker intact."""
    worker = ProcessJudge(CONFIG, timeout=30.0)
    name, url, keys = _cases()[0]
    try:
        with pytest.raises(Exception) as caught:
            await worker.judge(name, {"queries": "not a list", "requests": 7}, 12345)  # type: ignore[arg-type]
        _, verdict = await worker.judge(name, copy.deepcopy(keys), url)
    finally:
        await worker.aclose()
    assert failure_of(caught.value).startswith("unknown_failure")
    assert worker.started == 1 and verdict == WebVerdict(False, ())


async def test_closed_judge_lets_its_worker_exit_cleanly() -> None:
    """aclose closes the worker's stdin; it exits with status 0 (no kill needed)."""
    worker = ProcessJudge(CONFIG, timeout=30.0)
    name, url, keys = _cases()[0]
    await worker.judge(name, copy.deepcopy(keys), url)
    transport = worker._transport
    await worker.aclose()
    assert transport is not None and transport.get_returncode() == 0


async def test_workers_that_keep_dying_hand_judging_back(tmp_path: Path) -> None:
    """A worker that dies at start-up is restarted at most MAX_STARTS times in the window;
    then the judge says so (WorkerUnavailable) and the pipeline judges on its own loop."""
    extra = tmp_path / "local.csv"
    extra.write_text("name,scope,pattern,expected_countries,source,exp_url,notes\n")
    config = parse_config({"analysis": {"not_bogon": ["127.0.0.0/8"],
                                        "fingerprint_files": [str(extra)]}}).config
    pipeline = Pipeline(config)  # reads the file now; the workers, started later, cannot
    extra.unlink()
    name, url, keys = _cases()[0]
    assert pipeline.judge is not None
    failures = []
    try:
        for _ in range(MAX_STARTS):
            with pytest.raises(WorkerGone) as caught:
                await pipeline.judge.judge(name, copy.deepcopy(keys), url)
            failures.append(caught.type)
        record = {"test_name": name, "test_keys": copy.deepcopy(keys)}
        verdict = await pipeline.verdict(record, url)
    finally:
        await pipeline.aclose()
    assert failures == [WorkerGone] * MAX_STARTS and pipeline.judge.started == MAX_STARTS
    assert not pipeline.judge.usable
    assert verdict == judge(Analyzer(CONFIG), name, copy.deepcopy(keys), url)
    assert "x_analysis_failure" not in record["test_keys"]


def test_take_frames_splits_complete_frames_and_refuses_oversized_ones() -> None:
    """Both ends' one parser: whole frames out, a partial one kept, a huge length refused."""
    buffer = bytearray(frame(b"one") + frame(b"") + frame(b"three")[:5])
    assert take_frames(buffer) == [b"one", b""]
    buffer += frame(b"three")[5:]
    assert take_frames(buffer) == [b"three"] and buffer == bytearray()
    with pytest.raises(ValueError):
        take_frames(bytearray((MAX_FRAME + 1).to_bytes(4, "big")))
