"""Reading segments back: listing, torn tails, corrupt lines, compressed files."""

from __future__ import annotations

import gzip
import os
import tracemalloc
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kzprobe.storage.codecs import Encoder
from kzprobe.storage.segments import iter_lines, iter_records, list_segments


def _lines(*records: object) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


class Errors(list[tuple[str, int, str]]):
    """Collects on_error reports as (file name, line, reason)."""

    def __call__(self, path: Path, line: int, reason: str) -> None:
        self.append((path.name, line, reason))


def test_list_segments_filters_and_sorts(tmp_path: Path) -> None:
    """Only segment files are listed, sorted by name; .part only when asked for."""
    for name in ("c.ndjson.part", "b.ndjson", "a.ndjson.gz", "d.ndjson.zst", "notes.txt",
                 ".kzprobe.lock", "e.ndjson.gz.tmp", ".ndjson"):
        (tmp_path / name).write_bytes(b"")
    names = [p.name for p in list_segments([tmp_path])]
    assert names == ["a.ndjson.gz", "b.ndjson", "c.ndjson.part", "d.ndjson.zst"]
    closed = [p.name for p in list_segments([tmp_path], include_open=False)]
    assert closed == ["a.ndjson.gz", "b.ndjson", "d.ndjson.zst"]


def test_list_segments_keeps_the_complete_twin(tmp_path: Path) -> None:
    """A segment caught mid-compression or mid-publish is listed once, in its complete form."""
    for name in ("x.ndjson", "x.ndjson.gz", "y.ndjson.part", "y.ndjson"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_segments([tmp_path])] == ["x.ndjson.gz", "y.ndjson"]
    plain, packed = tmp_path / "x.ndjson", tmp_path / "x.ndjson.gz"
    assert list_segments([plain, packed]) == list_segments([packed, plain]) == [packed]


def test_list_segments_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    """A named file that is missing or not a segment is an error, not silently skipped."""
    (tmp_path / "notes.txt").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        list_segments([tmp_path / "nope"])
    with pytest.raises(ValueError, match="not a segment"):
        list_segments([tmp_path / "notes.txt"])


def test_torn_tail_of_open_segment_is_skipped_silently(tmp_path: Path) -> None:
    """A half-written last line in a .part is a write in progress, not an error."""
    part = tmp_path / "s.ndjson.part"
    part.write_bytes(_lines({"seq": 0}, {"seq": 1}) + b'{"seq": 2, "pad')
    errors = Errors()
    assert [n for n, _ in iter_lines(part, on_error=errors)] == [1, 2]
    assert [r["seq"] for r in iter_records([part], on_error=errors)] == [0, 1]
    assert errors == []


def test_torn_tail_of_closed_segment_is_reported(tmp_path: Path) -> None:
    """A closed segment should never end mid-line: the tail is skipped and reported."""
    seg = tmp_path / "s.ndjson"
    seg.write_bytes(_lines({"seq": 0}) + b'{"seq": 1')
    errors = Errors()
    assert [r["seq"] for r in iter_records([seg], on_error=errors)] == [0]
    assert errors == [("s.ndjson", 2, "torn last line (no trailing newline)")]


def test_corrupt_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    """Bad JSON, non-objects and blank lines are reported by line number and skipped."""
    seg = tmp_path / "s.ndjson"
    seg.write_bytes(_lines({"seq": 0}) + b"{not json\n" + b"[1, 2]\n" + b"\n" + _lines({"seq": 1}))
    errors = Errors()
    assert [r["seq"] for r in iter_records([tmp_path], on_error=errors)] == [0, 1]
    assert [(f, n) for f, n, _ in errors] == [("s.ndjson", 2), ("s.ndjson", 3), ("s.ndjson", 4)]
    assert errors[0][2].startswith("invalid JSON")
    assert errors[1][2] == "not a JSON object: list"


def test_overlong_line_is_skipped_without_stopping(tmp_path: Path) -> None:
    """A line over the cap (here spanning several read chunks) is reported; reading goes on."""
    seg = tmp_path / "s.ndjson"
    huge = b'{"pad": "' + b"x" * (3 << 20) + b'"}\n'
    medium = b'{"pad": "' + b"y" * 70_000 + b'"}\n'
    seg.write_bytes(_lines({"seq": 0}) + huge + _lines({"seq": 1}) + medium + _lines({"seq": 2}))
    errors = Errors()
    records = list(iter_records([seg], on_error=errors, max_line_bytes=65536))
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert errors == [("s.ndjson", 2, "line longer than 65536 bytes"),
                      ("s.ndjson", 4, "line longer than 65536 bytes")]


def test_overlong_torn_tail_in_part_is_not_buffered(tmp_path: Path) -> None:
    """An endless unterminated tail in a .part is dropped, not accumulated or reported."""
    part = tmp_path / "s.ndjson.part"
    part.write_bytes(_lines({"seq": 0}) + b"z" * (3 << 20))
    errors = Errors()
    assert [r["seq"] for r in iter_records([part], on_error=errors, max_line_bytes=4096)] == [0]
    assert errors == []


def test_reader_memory_is_bounded_by_the_line_cap(tmp_path: Path) -> None:
    """A 24 MiB line is skipped with memory near the cap plus one read chunk, not 24 MiB."""
    seg = tmp_path / "s.ndjson"
    seg.write_bytes(b"z" * (24 << 20) + b"\n" + _lines({"seq": 0}) + b"q" * (24 << 20))
    errors = Errors()
    tracemalloc.start()
    try:
        records = list(iter_records([seg], on_error=errors, max_line_bytes=65536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records == [{"seq": 0}]
    assert [n for _, n, _ in errors] == [1, 3]
    assert peak < 8 << 20


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    """Concatenated gzip members and zstd frames read as one stream, in name order."""
    gz = tmp_path / "a.ndjson.gz"
    gz.write_bytes(gzip.compress(_lines({"seq": 0})) + gzip.compress(_lines({"seq": 1})))
    cctx = zstandard.ZstdCompressor()
    zst = tmp_path / "b.ndjson.zst"
    zst.write_bytes(cctx.compress(_lines({"seq": 2})) + cctx.compress(_lines({"seq": 3})))
    errors = Errors()
    assert [r["seq"] for r in iter_records([tmp_path], on_error=errors)] == [0, 1, 2, 3]
    assert errors == []


def test_broken_compressed_file_is_reported_and_others_still_read(tmp_path: Path) -> None:
    """A truncated .gz and a garbage .zst are reported; the good segment after them is read."""
    data = gzip.compress(_lines(*({"seq": i} for i in range(100))))
    (tmp_path / "a.ndjson.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "b.ndjson.zst").write_bytes(b"not zstd at all")
    (tmp_path / "c.ndjson").write_bytes(_lines({"seq": "ok"}))
    errors = Errors()
    records = list(iter_records([tmp_path], on_error=errors))
    assert records[-1] == {"seq": "ok"}
    assert [f for f, _, _ in errors] == ["a.ndjson.gz", "b.ndjson.zst"]
    assert all(reason.startswith("unreadable") for _, _, reason in errors)


def test_missing_path_is_reported_not_raised(tmp_path: Path) -> None:
    """iter_records reports a missing path and goes on with the others."""
    (tmp_path / "a.ndjson").write_bytes(_lines({"seq": 0}))
    errors = Errors()
    records = list(iter_records([tmp_path / "gone", tmp_path], on_error=errors))
    assert records == [{"seq": 0}]
    assert len(errors) == 1 and errors[0][:2] == ("gone", 0)


def test_segment_compressed_after_listing_is_read_from_its_twin(tmp_path: Path) -> None:
    """A plain segment the writer compresses mid-read is read from the new .gz instead."""
    (tmp_path / "a.ndjson").write_bytes(_lines({"seq": 0}))
    plain = tmp_path / "b.ndjson"
    plain.write_bytes(_lines({"seq": 1}))
    errors = Errors()
    records = iter_records([tmp_path], on_error=errors)
    assert next(records) == {"seq": 0}  # both files are listed by now
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(plain.read_bytes()))
    os.unlink(plain)
    assert list(records) == [{"seq": 1}]
    assert errors == []


@pytest.mark.parametrize("method", ["gzip", "zstd"])
def test_open_compressed_segment_reads_to_its_last_flush(tmp_path: Path, method: str) -> None:
    """An open .gz.part/.zst.part has no trailer yet: everything flushed is read, silently."""
    encoder = Encoder("gzip" if method == "gzip" else "zstd")
    part = tmp_path / f"a.ndjson{'.gz' if method == 'gzip' else '.zst'}.part"
    data = encoder.chunk(_lines(*({"n": i} for i in range(1000)))) + encoder.chunk(b'{"n": 10')
    part.write_bytes(data)
    errors = Errors()
    assert [r["n"] for r in iter_records([tmp_path], on_error=errors)] == list(range(1000))
    assert errors == []


def test_truncated_closed_gzip_is_still_reported(tmp_path: Path) -> None:
    """Only an open part may lack its end: a closed .gz without its trailer is an error."""
    encoder = Encoder("gzip")
    (tmp_path / "a.ndjson.gz").write_bytes(encoder.chunk(_lines({"n": 1})))
    errors = Errors()
    list(iter_records([tmp_path], on_error=errors))
    assert len(errors) == 1 and "unreadable" in errors[0][2]


def test_open_gzip_part_with_zeroed_tail_keeps_what_decodes(tmp_path: Path) -> None:
    """Zeros after the last flush (a power loss) are reported; the records before them read."""
    encoder = Encoder("gzip")
    part = tmp_path / "a.ndjson.gz.part"
    part.write_bytes(encoder.chunk(_lines(*({"n": i} for i in range(50)))) + bytes(4096))
    errors = Errors()
    assert [r["n"] for r in iter_records([part], on_error=errors)] == list(range(50))
    assert len(errors) == 1 and "invalid stored block" in errors[0][2]


# --------------------------------------------------------------------------- one name grammar

_S = "20240301T101500Z"
# name -> (prefix, probe id or old host, pid, seq, codec, state) if the writer made it
NAMES: dict[str, tuple[str, str, int, int, str, str] | None] = {
    f"kz-{_S}-almaty-1-9-000001.ndjson": ("kz", "almaty-1", 9, 1, "", ""),
    f"kz-{_S}-a_b-c-12-000002.ndjson.gz": ("kz", "a_b-c", 12, 2, ".gz", ""),
    f"kz-{_S}-5e3f0a9b1c2d-7-000003.ndjson.zst": ("kz", "5e3f0a9b1c2d", 7, 3, ".zst", ""),
    f"kz-{_S}-vps-1.example.net-77-000004.ndjson": ("kz", "vps-1.example.net", 77, 4, "", ""),
    f"kz-{_S}-h-1-000005.ndjson.part": ("kz", "h", 1, 5, "", ".part"),
    f"kz-{_S}-h-1-000006.ndjson.gz.part": ("kz", "h", 1, 6, ".gz", ".part"),
    f"kz-{_S}-h-1-000007.ndjson.zst.part": ("kz", "h", 1, 7, ".zst", ".part"),
    f"kz-{_S}-h-1-000008.ndjson.gz.tmp": ("kz", "h", 1, 8, ".gz", ".tmp"),
    f"kz-{_S}-h-1-000009.ndjson.zst.part.tmp": ("kz", "h", 1, 9, ".zst", ".part.tmp"),
    f"kz-{_S}-h-1-1000000.ndjson": ("kz", "h", 1, 1_000_000, "", ""),
    f"kz-b-{_S}-h-1-000001.ndjson.part": ("kz-b", "h", 1, 1, "", ".part"),  # another prefix
    f"kz-{_S}-notes.ndjson": None,  # no pid, no sequence
    f"kz-{_S}-other.ndjson.part": None,
    f"kz-{_S}-h-1-000001.ndjson.bak": None,
    f"kz-{_S}-h-1-000001.json": None,
    f"kz-{_S}--1-000001.ndjson": None,  # empty id
    f"kz-{_S}-h-1-01.ndjson": None,  # the writer's sequence has six digits or more
    "kz-20241399T000000Z-h-1-000001.ndjson": None,  # month 13
    "kz-2024-h-1-000001.ndjson.part": None,
    "notes.ndjson": None,
    "kzprobe-x.ndjson.gz": None,
    ".ndjson": None,
    ".kz.lock": None,
    ".probe-id": None,
}


def _ours(name: str, prefix: str = "kz") -> bool:
    parts = NAMES[name]
    return parts is not None and parts[0] == prefix


def test_segment_names_parse_and_format() -> None:
    """The writer's names round-trip; foreign files and other prefixes are not ours."""
    from kzprobe.storage.naming import SegmentName

    for name, parts in NAMES.items():
        parsed = SegmentName.parse(name)
        got = None if parsed is None else (parsed.prefix, parsed.probe_id, parsed.pid,
                                           parsed.seq, parsed.codec, parsed.state)
        assert got == parts, name
        assert parsed is None or str(parsed) == name
        assert (SegmentName.parse(name, "kz") is not None) == _ours(name), name


def test_reader_retention_and_report_agree_on_names(tmp_path: Path) -> None:
    """segments, retention and report.scan judge every name of the table alike."""
    from kzprobe.report import scan
    from kzprobe.storage import retention

    for name in NAMES:
        (tmp_path / name).write_bytes(_lines({"n": 1}))
    readable = {n for n in NAMES if n.endswith((".ndjson", ".gz", ".zst", ".part"))
                and not n.startswith(".ndjson")}
    assert {p.name for p in list_segments([tmp_path])} == readable
    assert {f.path.name for f in retention._scan(tmp_path, "kz")} == set(filter(_ours, NAMES))
    for name, parts in NAMES.items():
        start = scan._segment_start(Path(name))
        assert (start is None) == (parts is None), name
        assert parts is None or start == datetime(2024, 3, 1, 10, 15), name
        expected = None if parts is None else parts[:3]
        assert scan._writer(Path(name)) == expected, name


async def test_sink_recovery_claims_the_same_names(tmp_path: Path) -> None:
    """At start the sink repairs and publishes exactly its prefix's .part, drops its .tmp."""
    from kzprobe.config import OutputConfig
    from kzprobe.storage.sink import NdjsonSink

    left = [n for n in NAMES if n.endswith((".part", ".tmp"))]
    for name in left:
        codec = next((m for m, s in (("gzip", ".gz"), ("zstd", ".zst")) if s + "." in name), None)
        data = _lines({"n": 1}) + b'{"torn'
        (tmp_path / name).write_bytes(Encoder(codec).chunk(data) if codec else data)
    sink = NdjsonSink(OutputConfig(dir=tmp_path, prefix="kz", compress="none"), probe_id="t")
    recovered = await sink.start()
    await sink.aclose()
    assert len(recovered) == len([n for n in left if _ours(n) and n.endswith(".part")])
    assert {n for n in left if (tmp_path / n).exists()} == {n for n in left if not _ours(n)}


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(st.characters(blacklist_characters="/", blacklist_categories=("C",)),
                      min_size=1, max_size=64).filter(lambda p: not p.startswith(".")),
       probe_id=st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
       pid=st.integers(1, 4_194_304), seq=st.integers(1, 10**7),
       codec=st.sampled_from(["", ".gz", ".zst"]), state=st.sampled_from(["", ".part", ".tmp"]))
def test_every_name_the_writer_makes_parses_back(prefix: str, probe_id: str, pid: int,
                                                 seq: int, codec: str, state: str) -> None:
    """Any configured prefix and probe id: the name parses back to its parts (given the
    prefix, as the writer, recovery and retention do), and is a segment to the reader."""
    from kzprobe.storage.naming import SegmentFile, SegmentName

    name = SegmentName.new(prefix, probe_id, pid, seq, codec, state)
    assert SegmentName.parse(str(name), prefix) == name
    assert str(SegmentName.parse(str(name))) == str(name)
    assert SegmentFile.parse(str(name)) is not None


def test_the_event_log_beside_the_segments_is_not_a_segment(tmp_path: Path) -> None:
    """``events-YYYYMMDD.ndjson`` (the alerts' log) ends in .ndjson but holds no records."""
    segment = tmp_path / "kzprobe-20261207T140000Z-probe1-7-000001.ndjson"
    segment.write_bytes(b'{"input": "https://a.test/"}\n')
    (tmp_path / "events-20261207.ndjson").write_bytes(b'{"kind": "blocked"}\n')
    assert list_segments([tmp_path]) == [segment]
