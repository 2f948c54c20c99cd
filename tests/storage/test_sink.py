"""NdjsonSink on real files: rotation, compression, crash recovery, full and read-only disks."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import zstandard

from kzprobe.config import Compression, OutputConfig, parse_config
from kzprobe.errors import ConfigError, KzprobeError
from kzprobe.storage import retention
from kzprobe.storage.codecs import SUFFIXES as COMPRESSED
from kzprobe.storage.codecs import Encoder
from kzprobe.storage.segments import iter_lines, iter_records, list_segments
from kzprobe.storage.sink import NdjsonSink

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("helpers_sink_writer.py")
NAME_RE = re.compile(r"^kzprobe-(\d{8}T\d{6}Z)-testhost-(\d+)-(\d{6})\.ndjson(\.gz|\.zst)?$")


def _out(directory: Path, **kw: Any) -> OutputConfig:
    kw.setdefault("compress", "none")
    kw.setdefault("fsync_interval", 0.05)
    return OutputConfig(dir=directory, **kw)


def _sink(directory: Path, *, queue_size: int = 4096, retry_interval: float = 0.05,
          **kw: Any) -> NdjsonSink:
    return NdjsonSink(_out(directory, **kw), queue_size=queue_size, probe_id="testhost",
                      retry_interval=retry_interval)


def _rec(seq: int, pad: int = 40) -> bytes:
    return orjson.dumps({"seq": seq, "pad": "x" * pad}, option=orjson.OPT_APPEND_NEWLINE)


def _read(directory: Path) -> tuple[list[dict[str, Any]], list[tuple[Path, int, str]]]:
    errors: list[tuple[Path, int, str]] = []
    records = list(iter_records([directory], on_error=lambda *e: errors.append(e)))
    return records, errors


def _seqs(directory: Path) -> list[int]:
    records, errors = _read(directory)
    assert errors == []
    return [r["seq"] for r in records]


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.part"))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".part", ".tmp")))


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 -- polls state that lives in the sink and on disk
            await asyncio.sleep(0.01)


async def _pending(aw: Awaitable[Any], seconds: float = 0.3) -> bool:
    """True if ``aw`` is still waiting after ``seconds``."""
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        return True
    return False


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize(("compress", "suffix"),
                         [("gzip", ".gz"), ("zstd", ".zst"), ("none", "")])
async def test_roundtrip_per_compression(tmp_path: Path, compress: Compression,
                                         suffix: str) -> None:
    """Records written then closed come back in order from one segment of the chosen codec."""
    sink = _sink(tmp_path, compress=compress)
    assert await sink.start() == []
    for i in range(300):
        await sink.write(_rec(i) if i % 2 else _rec(i).rstrip(b"\n"))  # newline optional
    await sink.aclose()
    files = [p.name for p in list_segments([tmp_path])]
    assert len(files) == 1 and files[0].endswith(".ndjson" + suffix)
    assert NAME_RE.match(files[0])
    assert _seqs(tmp_path) == list(range(300))
    assert _leftovers(tmp_path) == []
    assert sink.stats.records_written == 300
    assert sink.stats.segments_rotated == 1
    assert sink.stats.segments_compressed == (0 if compress == "none" else 1)


async def test_close_without_records_publishes_nothing(tmp_path: Path) -> None:
    """A sink that never got a record leaves no segment behind."""
    sink = _sink(tmp_path)
    await sink.start()
    await sink.aclose()
    assert list_segments([tmp_path]) == []


async def test_write_rejects_records_that_are_not_one_line(tmp_path: Path) -> None:
    """An embedded newline or an empty record would break framing, so it is refused."""
    sink = _sink(tmp_path)
    await sink.start()
    with pytest.raises(ValueError):
        await sink.write(b'{"a":1}\n{"b":2}\n')
    with pytest.raises(ValueError):
        await sink.write(b"")
    await sink.aclose()
    with pytest.raises(RuntimeError):
        await sink.write(_rec(0))


async def test_second_writer_on_the_same_prefix_is_refused(tmp_path: Path) -> None:
    """Two processes must never recover or write each other's segments."""
    first = _sink(tmp_path)
    await first.start()
    with pytest.raises(KzprobeError, match="another kzprobe process"):
        await _sink(tmp_path).start()
    other = NdjsonSink(_out(tmp_path, prefix="other"), probe_id="testhost")
    await other.start()
    await other.aclose()
    await first.aclose()


async def test_missing_zstandard_is_a_config_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """compress='zstd' without the package fails at start(), naming the fix."""
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ConfigError, match="zstandard"):
        await _sink(tmp_path, compress="zstd").start()


# --------------------------------------------------------------------------- rotation


async def test_rotation_by_size(tmp_path: Path) -> None:
    """Segments close between records at rotate_bytes; names sort in write order, unique."""
    sink = _sink(tmp_path, rotate_bytes=1024)
    await sink.start()
    for i in range(500):
        await sink.write(_rec(i, pad=i % 60))
    await sink.aclose()
    segments = list_segments([tmp_path])
    assert len(segments) > 20
    assert all(p.stat().st_size <= 1024 for p in segments)
    for path in segments:  # no record is split across two files
        assert path.read_bytes().endswith(b"\n")
    matches = [NAME_RE.match(p.name) for p in segments]
    assert all(matches)
    seqs = [int(m.group(3)) for m in matches if m]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    stamps = [m.group(1) for m in matches if m]
    assert len(set(stamps)) < len(stamps), "expected several rotations within one second"
    assert _seqs(tmp_path) == list(range(500))
    assert sink.stats.segments_rotated == len(segments)


async def test_rotation_by_age_without_further_writes(tmp_path: Path) -> None:
    """An idle segment is closed once rotate_seconds passes, even if nothing else arrives."""
    sink = _sink(tmp_path, rotate_seconds=0.2, compress="gzip")
    await sink.start()
    for i in range(3):
        await sink.write(_rec(i))
    await _until(lambda: any(p.name.endswith(".gz") for p in tmp_path.iterdir()))
    assert _leftovers(tmp_path) == []
    for i in range(3, 30):
        await sink.write(_rec(i))
        await asyncio.sleep(0.03)
    await sink.aclose()
    assert len(list_segments([tmp_path])) >= 4
    assert _seqs(tmp_path) == list(range(30))


async def test_rotate_closes_the_segment_now(tmp_path: Path) -> None:
    """rotate() publishes exactly the records written before it."""
    sink = _sink(tmp_path)
    await sink.start()
    for i in range(5):
        await sink.write(_rec(i))
    await sink.rotate()
    [first] = list_segments([tmp_path])
    assert [r["seq"] for r in iter_records([first])] == [0, 1, 2, 3, 4]
    for i in range(5, 8):
        await sink.write(_rec(i))
    await sink.aclose()
    assert len(list_segments([tmp_path])) == 2
    assert _seqs(tmp_path) == list(range(8))


async def test_aclose_drains_backpressured_producers(tmp_path: Path) -> None:
    """With a tiny queue, concurrent producers wait, and aclose() still writes every record."""
    sink = _sink(tmp_path, queue_size=4, rotate_bytes=4096, compress="gzip")
    await sink.start()

    async def produce(worker: int) -> None:
        for n in range(200):
            await sink.write(orjson.dumps({"worker": worker, "n": n}))

    async with asyncio.timeout(30):
        await asyncio.gather(*(produce(w) for w in range(5)))
        await sink.aclose()
    records, errors = _read(tmp_path)
    assert errors == []
    for worker in range(5):
        assert [r["n"] for r in records if r["worker"] == worker] == list(range(200))
    assert _leftovers(tmp_path) == []


async def test_byte_bound_lets_an_oversized_record_through(tmp_path: Path) -> None:
    """A record larger than queue_bytes is still written (alone), never deadlocked."""
    sink = NdjsonSink(_out(tmp_path), queue_bytes=100, probe_id="testhost")
    await sink.start()

    async def produce(worker: int) -> None:
        for n in range(50):
            await sink.write(orjson.dumps({"worker": worker, "n": n, "pad": "x" * 1000}))

    async with asyncio.timeout(30):
        await asyncio.gather(*(produce(w) for w in range(3)))
        await sink.aclose()
    records, errors = _read(tmp_path)
    assert errors == []
    for worker in range(3):
        assert [r["n"] for r in records if r["worker"] == worker] == list(range(50))


async def test_a_lone_record_reaches_the_file_promptly(tmp_path: Path) -> None:
    """Batching waits briefly for company, never long: a single record is on disk in 1 s."""
    sink = _sink(tmp_path)
    await sink.start()
    await sink.write(_rec(1))
    started = time.monotonic()
    await _until(lambda: sink.stats.records_written == 1, timeout=1.0)
    assert time.monotonic() - started < 1.0
    [part] = _leftovers(tmp_path)
    assert (tmp_path / part).read_bytes() == _rec(1)
    await sink.aclose()


async def test_gzip_segments_are_one_standard_gzip_member(tmp_path: Path) -> None:
    """Whatever gzip implementation compresses, the stdlib reads the segment back whole."""
    sink = _sink(tmp_path, compress="gzip", rotate_bytes=64 * 1024)
    await sink.start()
    lines = [_rec(i, pad=i % 300) for i in range(2000)]
    for line in lines:
        await sink.write(line)
    await sink.aclose()
    segments = list_segments([tmp_path])
    assert len(segments) > 5 and all(p.name.endswith(".gz") for p in segments)
    assert b"".join(gzip.decompress(p.read_bytes()) for p in segments) == b"".join(lines)


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
async def test_open_compressed_segment_is_readable_while_written(tmp_path: Path,
                                                                  compress: Compression) -> None:
    """Each batch ends at a flush point: every record written decodes before the segment closes."""
    sink = _sink(tmp_path, compress=compress)
    await sink.start()
    for i in range(500):
        await sink.write(_rec(i, pad=i % 200))
    await _until(lambda: sink.stats.records_written == 500)
    [part] = _parts(tmp_path)
    assert part.name.endswith(f"{COMPRESSED[compress]}.part")
    assert list(range(500)) == _seqs(tmp_path)  # read from the open .part, no error
    for i in range(500, 600):
        await sink.write(_rec(i))
    await sink.aclose()
    assert not part.exists() and _seqs(tmp_path) == list(range(600))
    assert len(list_segments([tmp_path])) == 1


def _stream(records: list[bytes], batch: int, method: Compression = "gzip") -> list[bytes]:
    """The compressed chunks the sink would write for ``records``, ``batch`` per flush."""
    encoder = Encoder("gzip" if method == "gzip" else "zstd")
    return [encoder.chunk(b"".join(records[i:i + batch])) for i in range(0, len(records), batch)]


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
@pytest.mark.parametrize("damage", ["cut mid-batch", "zero-filled tail", "no trailer"])
async def test_recovery_repairs_a_crashed_compressed_part(tmp_path: Path, compress: Compression,
                                                           damage: str) -> None:
    """A .gz.part without its end becomes a complete file of every whole record it holds."""
    records = [_rec(i, pad=i % 50) for i in range(300)]
    chunks = _stream(records, 40, compress)
    data = b"".join(chunks)
    if damage == "cut mid-batch":
        data = data[:-len(chunks[-1]) // 2]
    elif damage == "zero-filled tail":  # blocks allocated but never written (power loss)
        data += bytes(8192)
    suffix = COMPRESSED[compress]
    (tmp_path / _name(1, suffix + ".part")).write_bytes(data)
    sink = _sink(tmp_path, compress=compress)
    assert await sink.start() == [tmp_path / _name(1, suffix)]
    await sink.aclose()
    assert _visible(tmp_path) == [_name(1, suffix)]
    raw = (tmp_path / _name(1, suffix)).read_bytes()
    whole = (gzip.decompress(raw) if compress == "gzip"
             else zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    kept = whole.count(b"\n")
    assert whole == b"".join(records[:kept])  # a strict reader: the stream is complete
    assert kept >= (260 if damage == "cut mid-batch" else 300)


async def test_recovery_drops_a_compressed_part_without_a_whole_record(tmp_path: Path) -> None:
    """Nothing decodable (a crash right after the header): the part is removed, not published."""
    data = b"".join(_stream([_rec(0, pad=4000)], 1))
    (tmp_path / _name(1, ".gz.part")).write_bytes(data[:30])
    sink = _sink(tmp_path, compress="gzip")
    assert await sink.start() == []
    await sink.aclose()
    assert _visible(tmp_path) == []


# --------------------------------------------------------------------------- recovery


def _name(seq: int, suffix: str = "") -> str:
    return f"kzprobe-20200101T000000Z-oldhost-1-{seq:06d}.ndjson{suffix}"


async def test_recovery_after_crash(tmp_path: Path) -> None:
    """start() trims a torn .part and publishes it, drops *.tmp, finishes compressions."""
    good = b"".join(_rec(i) for i in range(3))
    (tmp_path / _name(1, ".part")).write_bytes(good + b'{"seq": 3, "pa')
    (tmp_path / _name(2, ".gz.tmp")).write_bytes(b"half a gzip")
    (tmp_path / _name(3)).write_bytes(b"plain copy, never read\n")
    (tmp_path / _name(3, ".gz")).write_bytes(gzip.compress(_rec(30)))
    (tmp_path / _name(4)).write_bytes(_rec(40))
    (tmp_path / _name(5, ".part")).write_bytes(b'{"seq": 50, "only half')
    sink = _sink(tmp_path, compress="gzip")
    recovered = await sink.start()
    await sink.aclose()
    assert recovered == [tmp_path / _name(1, ".gz")]
    assert _visible(tmp_path) == [_name(1, ".gz"), _name(3, ".gz"), _name(4, ".gz")]
    assert gzip.decompress((tmp_path / _name(1, ".gz")).read_bytes()) == good
    assert _seqs(tmp_path) == [0, 1, 2, 30, 40]


async def test_recovery_never_overwrites_a_closed_segment(tmp_path: Path) -> None:
    """A leftover whose final name (or its compressed twin) exists gets the next free seq."""
    (tmp_path / _name(1, ".part")).write_bytes(_rec(100))
    (tmp_path / _name(1, ".gz")).write_bytes(gzip.compress(_rec(1)))
    (tmp_path / _name(2)).write_bytes(_rec(2))
    sink = _sink(tmp_path)
    assert await sink.start() == [tmp_path / _name(3)]
    await sink.aclose()
    assert sorted(_seqs(tmp_path)) == [1, 2, 100]
    assert (tmp_path / _name(3)).read_bytes() == _rec(100)


async def test_recovery_after_crash_between_link_and_unlink(tmp_path: Path) -> None:
    """A .part hard-linked to its final name is the same segment: kept once, not twice."""
    final = tmp_path / _name(1)
    final.write_bytes(_rec(7))
    os.link(final, tmp_path / _name(1, ".part"))
    sink = _sink(tmp_path, compress="gzip")
    assert await sink.start() == [tmp_path / _name(1, ".gz")]
    await sink.aclose()
    assert _seqs(tmp_path) == [7]


async def test_recovery_leaves_other_prefixes_alone(tmp_path: Path) -> None:
    """Prefix 'kz' must not recover the open segment of a live writer with prefix 'kz-b'."""
    theirs = tmp_path / "kz-b-20200101T000000Z-h-1-000001.ndjson.part"
    theirs.write_bytes(b'{"seq": 1}\n{"half')
    mine = tmp_path / "kz-20200101T000000Z-h-1-000001.ndjson.part"
    mine.write_bytes(b'{"seq": 2}\n{"half')
    sink = NdjsonSink(_out(tmp_path, prefix="kz"), probe_id="testhost")
    assert await sink.start() == [tmp_path / "kz-20200101T000000Z-h-1-000001.ndjson"]
    await sink.aclose()
    assert theirs.read_bytes() == b'{"seq": 1}\n{"half'


# --------------------------------------------------------------------------- probe id

ID_NAME_RE = re.compile(r"^kzprobe-\d{8}T\d{6}Z-(?P<id>[A-Za-z0-9_-]+)-(\d+)-(\d{6})\.ndjson$")


async def _one_segment(sink: NdjsonSink, directory: Path) -> str:
    await sink.start()
    await sink.write(_rec(0))
    await sink.aclose()
    names = [p.name for p in list_segments([directory])]
    assert len(names) == 1
    return names[-1]


async def test_default_probe_id_is_random_stored_and_reused(tmp_path: Path) -> None:
    """Segment names carry a random id kept in the output dir, never the host name."""
    first = await _one_segment(NdjsonSink(_out(tmp_path)), tmp_path)
    stored = tmp_path / ".probe-id"
    probe_id = stored.read_text().strip()
    match = ID_NAME_RE.match(first)
    assert match and match["id"] == probe_id
    assert socket.gethostname() not in first
    assert stat.S_IMODE(stored.stat().st_mode) == 0o640
    for path in list_segments([tmp_path]):
        path.unlink()
    second = await _one_segment(NdjsonSink(_out(tmp_path)), tmp_path)  # a restart
    match = ID_NAME_RE.match(second)
    assert match and match["id"] == probe_id
    other = tmp_path / "other"
    third = await _one_segment(NdjsonSink(_out(other)), other)  # another probe: another id
    match = ID_NAME_RE.match(third)
    assert match and match["id"] != probe_id


async def test_configured_probe_id_names_segments(tmp_path: Path) -> None:
    """[probe] id wins over the stored one; nothing is stored for it."""
    sink = NdjsonSink(_out(tmp_path), probe_id="kz-almaty_1")
    name = await _one_segment(sink, tmp_path)
    match = ID_NAME_RE.match(name)
    assert match and match["id"] == "kz-almaty_1" and sink.probe_id == "kz-almaty_1"
    assert not (tmp_path / ".probe-id").exists()


@pytest.mark.parametrize("content", [b"", b"../../etc\n", b"a" * 4096, b"bad id\n"])
async def test_a_stored_probe_id_that_is_not_one_is_refused(tmp_path: Path,
                                                           content: bytes) -> None:
    """Someone else's file (or an edit gone wrong) stops the start with one line."""
    (tmp_path / ".probe-id").write_bytes(content)
    with pytest.raises(KzprobeError, match=r"\.probe-id"):
        await NdjsonSink(_out(tmp_path)).start()


async def test_a_probe_id_path_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    """A directory or FIFO in its place is refused, without blocking on the FIFO."""
    os.mkfifo(tmp_path / ".probe-id")
    with pytest.raises(KzprobeError, match=r"\.probe-id"):
        await asyncio.wait_for(NdjsonSink(_out(tmp_path)).start(), 5)


def test_probe_id_option_is_validated() -> None:
    """[probe] id goes into file names: short, and only A-Z a-z 0-9 _ -."""
    assert parse_config({"probe": {"id": "kz-1_a"}}).config.probe.id == "kz-1_a"
    for bad in ("", "a b", "a/b", "a\nb", "x" * 33, "ü"):
        with pytest.raises(ConfigError, match=r"\[probe\] id"):
            parse_config({"probe": {"id": bad}})


async def test_old_host_named_and_new_id_named_segments_both_parse(tmp_path: Path) -> None:
    """Files written before the probe id (host names, dots and all) are still read, recovered
    and counted by retention next to the new ones."""
    old = tmp_path / "kzprobe-20200101T000000Z-vps-1.example.net-77-000001.ndjson"
    old.write_bytes(_rec(1))
    old_part = tmp_path / "kzprobe-20200101T000001Z-vps-1.example.net-77-000002.ndjson.part"
    old_part.write_bytes(_rec(2) + b'{"half')
    sink = NdjsonSink(_out(tmp_path), probe_id="p1")
    assert await sink.start() == [old_part.with_name(old_part.name.removesuffix(".part"))]
    await sink.write(_rec(3))
    await sink.aclose()
    assert sorted(_seqs(tmp_path)) == [1, 2, 3]
    names = [f.path.name for f in retention._scan(tmp_path, "kzprobe")]
    assert len(names) == 3 and names[:2] == [old.name, old_part.name.removesuffix(".part")]
    assert ID_NAME_RE.match(names[2])


@pytest.mark.slow
async def test_kill_9_loses_at_most_the_record_being_written(tmp_path: Path) -> None:
    """SIGKILL at random moments, then start(): every closed segment parses, seqs are gapless."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HELPER), str(tmp_path), str(run),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            ready = await proc.stdout.readline()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            proc.kill()
            out, err = await proc.communicate()
        assert ready == b"ready\n", err.decode(errors="replace")
        assert proc.returncode == -9
        written = max((int(x) for x in out.split()), default=0)
        sink = _sink(tmp_path, compress="gzip")
        await sink.start()
        await sink.aclose()
        assert _leftovers(tmp_path) == [], f"seed {seed}"
        records, errors = _read(tmp_path)
        assert errors == [], f"seed {seed}"
        seqs = [r["seq"] for r in records if r["run"] == run]
        assert seqs == list(range(len(seqs))), f"seed {seed}"
        assert len(seqs) >= max(written, 1), f"seed {seed}: {len(seqs)} < {written}"


# --------------------------------------------------------------------------- full / read-only


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (root only): the place to run out of space."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=10)
        problem = proc.stderr.strip() if proc.returncode else None
    except (OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {problem}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {problem}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=10)


def _fill(path: Path) -> None:
    """Fill the filesystem to its last block."""
    with pytest.raises(OSError), open(path, "wb", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 4096)


def _remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True, timeout=10,
                   capture_output=True)


def _noisy(seq: int) -> bytes:
    """A ~1 KB record that compresses little, so that gzip output fills a disk too."""
    record = {"seq": seq, "pad": os.urandom(500).hex()}
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


@pytest.mark.parametrize("compress", ["none", "gzip"])
async def test_disk_full_blocks_keeps_records_and_resumes(tiny_fs: Path,
                                                          compress: Compression) -> None:
    """ENOSPC: the file ends on a whole batch, nothing is lost, writing resumes with space."""
    filler = tiny_fs / "filler.bin"
    filler.write_bytes(b"\0" * (200 * 1024))
    out = tiny_fs / "out"
    sink = _sink(out, queue_size=16, compress=compress)
    await sink.start()
    accepted = 0

    async def produce() -> None:
        nonlocal accepted
        for i in range(150):
            await sink.write(_noisy(i))
            accepted += 1

    with structlog.testing.capture_logs() as logs:
        producer = asyncio.create_task(produce())
        await _until(lambda: sink.is_blocked)
        assert await _pending(sink.wait_writable())
        assert await _pending(asyncio.shield(producer)), "a blocked sink must apply backpressure"
        assert accepted < 150
        assert sink.stats.last_error is not None and sink.stats.last_error.startswith("ENOSPC")
        [part] = list(out.glob("*.part"))
        errors: list[tuple[Path, int, str]] = []
        on_disk = [orjson.loads(line)["seq"] for _, line in
                   iter_lines(part, on_error=lambda *e: errors.append(e))]
        assert on_disk == list(range(len(on_disk))) and on_disk and errors == []
        if compress == "none":
            assert part.read_bytes().endswith(b"\n")
        filler.unlink()
        async with asyncio.timeout(10):
            await sink.wait_writable()
            await producer
        await sink.aclose()
    assert not sink.is_blocked and sink.stats.write_errors >= 1
    assert _seqs(out) == list(range(150))
    events = [e["event"] for e in logs]
    assert events.index("sink_blocked") < events.index("sink_resumed")


async def test_byte_bound_applies_backpressure_while_disk_full(tiny_fs: Path) -> None:
    """With room for many records but few bytes, a blocked sink still stops the producer."""
    (tiny_fs / "filler.bin").write_bytes(b"\0" * (200 * 1024))
    out = tiny_fs / "out"
    sink = NdjsonSink(_out(out), queue_size=100_000, queue_bytes=8 * 1024, probe_id="testhost",
                      retry_interval=0.05)
    await sink.start()
    accepted = 0

    async def produce() -> None:
        nonlocal accepted
        for i in range(150):
            await sink.write(_rec(i, pad=1000))
            accepted += 1

    producer = asyncio.create_task(produce())
    await _until(lambda: sink.is_blocked)
    assert await _pending(asyncio.shield(producer)), "the byte bound must stop the producer"
    assert accepted < 150
    (tiny_fs / "filler.bin").unlink()
    async with asyncio.timeout(10):
        await producer
    await sink.aclose()
    assert _seqs(out) == list(range(150))


async def test_full_disk_defers_repair_of_a_compressed_part(tiny_fs: Path) -> None:
    """No room to rewrite a crashed .gz.part: the sink still starts; a later start repairs it."""
    out = tiny_fs / "out"
    out.mkdir()
    records = [_noisy(i) for i in range(20)]
    part = out / _name(1, ".gz.part")
    part.write_bytes(b"".join(_stream(records, 5)))
    _fill(tiny_fs / "filler.bin")
    sink = _sink(out, compress="gzip")
    with structlog.testing.capture_logs() as logs:
        assert await sink.start() == []
    await sink.aclose(timeout=0.5)
    assert "sink_recovery_deferred" in [e["event"] for e in logs]
    assert part.exists()
    (tiny_fs / "filler.bin").unlink()
    again = _sink(out, compress="gzip")
    assert await again.start() == [out / _name(1, ".gz")]
    await again.aclose()
    assert _seqs(out) == list(range(20)) and _leftovers(out) == []


async def test_read_only_filesystem_blocks_then_resumes(tiny_fs: Path) -> None:
    """EROFS (a read-only remount) blocks the sink until the filesystem is writable again."""
    out = tiny_fs / "out"
    sink = _sink(out)
    await sink.start()
    for i in range(10):
        await sink.write(_rec(i))
    await sink.rotate()  # no file open for writing, or the remount would fail with EBUSY
    _remount(tiny_fs, "ro")
    try:
        for i in range(10, 20):
            await sink.write(_rec(i))
        await _until(lambda: sink.is_blocked)
        assert sink.stats.last_error is not None and sink.stats.last_error.startswith("EROFS")
        assert await _pending(sink.wait_writable())
    finally:
        _remount(tiny_fs, "rw")
    async with asyncio.timeout(10):
        await sink.wait_writable()
    await sink.aclose()
    assert _seqs(out) == list(range(20))
    assert len(list_segments([out])) == 2


@pytest.mark.parametrize("compress", ["none", "gzip"])
async def test_aclose_gives_up_after_its_deadline_and_counts_losses(
        tiny_fs: Path, compress: Compression) -> None:
    """While the disk stays full, aclose(timeout) returns, logging exactly the records lost.

    (A compressed segment cut short is left as a .part for the next start to repair.)
    """
    (tiny_fs / "filler.bin").write_bytes(b"\0" * (200 * 1024))
    out = tiny_fs / "out"
    sink = _sink(out, queue_size=16, compress=compress)
    await sink.start()
    accepted = 0

    async def produce() -> None:
        nonlocal accepted
        try:
            for i in range(150):
                await sink.write(_noisy(i))
                accepted += 1
        except RuntimeError:
            pass  # the sink gave up: this record was refused, not accepted

    producer = asyncio.create_task(produce())
    await _until(lambda: sink.is_blocked)
    await _until(lambda: sink.stats.write_errors >= 3)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        await sink.aclose(timeout=0.5)
        assert time.monotonic() - started < 8
    async with asyncio.timeout(5):
        await producer
    records, errors = _read(out)
    assert errors == []
    assert [r["seq"] for r in records] == list(range(len(records)))
    [lost] = [e["lost"] for e in logs if e["event"] == "sink_records_lost"]
    assert lost > 0 and lost + len(records) == accepted
    (tiny_fs / "filler.bin").unlink()
    restarted = _sink(out, compress=compress)
    await restarted.start()
    await restarted.aclose()
    assert _leftovers(out) == [] and _seqs(out) == [r["seq"] for r in records]


async def test_segment_that_never_got_a_record_is_not_published(tiny_fs: Path) -> None:
    """With no space at all, giving up leaves no empty segment and no .part behind."""
    _fill(tiny_fs / "filler.bin")
    out = tiny_fs / "out"
    sink = _sink(out)
    await sink.start()
    await sink.write(_rec(0))
    await _until(lambda: sink.is_blocked)
    await sink.aclose(timeout=0.2)
    assert _visible(out) == []


async def test_aclose_with_producers_still_waiting_loses_nothing_accepted(tmp_path: Path) -> None:
    """Closing while producers wait for queue space: each write() that returned is on disk."""
    sink = _sink(tmp_path, queue_size=2)
    await sink.start()
    accepted: list[int] = []

    async def produce(worker: int) -> None:
        try:
            for n in range(10**9):  # until the sink refuses
                await sink.write(orjson.dumps({"seq": worker * 10**9 + n}))
                accepted.append(worker * 10**9 + n)
        except RuntimeError:
            pass  # refused: the sink is closing

    async with asyncio.timeout(30):
        producers = [asyncio.create_task(produce(w)) for w in range(6)]
        await asyncio.sleep(0.05)
        await sink.aclose()
        await asyncio.gather(*producers)
    assert accepted
    assert sorted(_seqs(tmp_path)) == sorted(accepted)


# --------------------------------------------------------------------------- file modes


@pytest.fixture(params=[0, 0o022, 0o077], ids=["umask-0", "umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()
            if not p.name.startswith(".")}


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
async def test_files_are_0640_and_directories_0750_whatever_the_umask(
        tmp_path: Path, umask: int, compress: Compression) -> None:
    """Segments (open, closed, compressed, repaired after a crash) are 0640 and the output
    directories the sink creates are 0750, under umask 0, 022 or 077."""
    out = tmp_path / "new" / "out"
    out.mkdir(parents=True, mode=0o700)
    suffix = COMPRESSED.get(compress, "")
    crashed = out / _name(1, suffix + ".part")  # a crash left it, 0640 as the sink made it
    records = [_rec(i) for i in range(50)]
    crashed.write_bytes(b"".join(_stream(records, 10, compress)) if suffix
                        else b"".join(records) + b'{"torn')
    crashed.chmod(0o640)
    out.chmod(0o750)
    fresh = tmp_path / "made" / "by" / "sink"
    for directory in (out, fresh):
        sink = _sink(directory, compress=compress)
        await sink.start()
        await sink.write(_rec(99))
        await _until(lambda d=directory: any(p.name.endswith(".part") for p in d.iterdir()))
        assert set(_modes(directory).values()) == {0o640}  # the open segment too
        await sink.aclose()
        modes = _modes(directory)
        assert modes and set(modes.values()) == {0o640}, {k: oct(v) for k, v in modes.items()}
    for made in (tmp_path / "made", tmp_path / "made" / "by", fresh):
        assert made.stat().st_mode & 0o777 == 0o750, made
