"""A closed ``.gz`` segment cut mid-stream (a copy stopped short, a disk that filled) still
yields every whole record before the cut, in the segment reader and in ``kzprobe report``,
and the damage is one ``unreadable: ...`` error."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import pytest

from kzprobe.config import OutputConfig
from kzprobe.report import scan
from kzprobe.report.model import Window
from kzprobe.storage.segments import iter_lines, iter_records
from kzprobe.storage.sink import NdjsonSink

N_RECORDS = 400


def _record(n: int) -> bytes:
    record = {"input": f"http://site-{n}.test/", "measurement_start_time": "2024-03-01 10:00:00",
              "n": n, "pad": "x" * (n % 53)}
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


@pytest.fixture
async def segment(tmp_path: Path) -> bytes:
    """The bytes of one closed gzip segment the project's sink wrote (several flushes)."""
    out = tmp_path / "written"
    out.mkdir()
    sink = NdjsonSink(OutputConfig(dir=out, compress="gzip", fsync_interval=0.01))
    await sink.start()
    for n in range(N_RECORDS):
        await sink.write(_record(n))
    await sink.aclose()
    (closed,) = out.glob("*.ndjson.gz")
    return closed.read_bytes()


def _decodable(data: bytes) -> int:
    """Whole lines zlib alone gets from the cut stream (it stops quietly at the cut)."""
    return zlib.decompressobj(31).decompress(data).count(b"\n")


def _cuts(size: int) -> list[int]:
    return sorted({size // 7, size // 3, size // 2, (2 * size) // 3, size - 9, size - 1})


def _cut_file(tmp_path: Path, data: bytes, cut: int) -> Path:
    directory = tmp_path / f"cut-{cut}"
    directory.mkdir()
    path = directory / "kz-20240301T100000Z-t-1-000001.ndjson.gz"
    path.write_bytes(data[:cut])
    return path


def test_the_whole_segment_reads(segment: bytes, tmp_path: Path) -> None:
    path = _cut_file(tmp_path, segment, len(segment))
    assert [r["n"] for r in iter_records([path])] == list(range(N_RECORDS))


def test_cut_segment_yields_every_whole_record(segment: bytes, tmp_path: Path) -> None:
    for cut in _cuts(len(segment)):
        path = _cut_file(tmp_path, segment, cut)
        expected = _decodable(segment[:cut])
        assert 0 < expected < N_RECORDS or cut > len(segment) - 10, cut
        errors = scan.ErrorLog()
        got = [r["n"] for r in iter_records([path], on_error=errors)]
        assert got == list(range(expected)), (cut, len(got), expected)
        assert errors.count == 1 and errors.kept[0].reason.startswith("unreadable: "), cut
        numbers = [lineno for lineno, _ in iter_lines(path)]
        assert numbers == list(range(1, expected + 1))


def test_a_cut_second_member_keeps_the_first_whole(segment: bytes, tmp_path: Path) -> None:
    """Two members (segments concatenated), the second cut: all of the first, then the rest."""
    cut = len(segment) // 2
    path = _cut_file(tmp_path, segment + segment[:cut], len(segment) + cut)
    errors = scan.ErrorLog()
    got = [r["n"] for r in iter_records([path], on_error=errors)]
    assert got == [*range(N_RECORDS), *range(_decodable(segment[:cut]))]
    assert errors.count == 1


def test_report_reads_the_whole_records_of_a_cut_segment(segment: bytes,
                                                         tmp_path: Path) -> None:
    for cut in _cuts(len(segment)):
        path = _cut_file(tmp_path, segment, cut)
        spill = tmp_path / f"spill-{cut}"
        spill.mkdir()
        errors = scan.ErrorLog()
        con = scan.connect(spill, memory_limit="256MB", threads=1)
        stats = scan.load(con, [path.parent], Window(None, None), spill, errors)
        assert stats.records == _decodable(segment[:cut]), cut
        assert errors.count == 1 and errors.kept[0].reason.startswith("unreadable: ")
