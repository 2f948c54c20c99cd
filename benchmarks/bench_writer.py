"""Writer: records/s through NdjsonSink (rotation + gzip) vs ``orjson.dumps`` + a plain file.

    .venv/bin/python benchmarks/bench_writer.py [--records 40000] [--compress gzip]
                                                [--rotate-bytes 8388608] [--repeat 3]

Records are realistic: the shapes of one ``kzprobe demo`` sweep (run first, ~5 s; or
``--templates FILE.ndjson``), each copy with its own site name, timings and leaf
certificate bytes, so they average ~4.7 KB like real kzprobe records (DNS answers, TCP,
TLS with the peer chain, HTTP headers, the control's answer, verdicts). Tiny records
would measure only per-call overhead and hide the cost that matters: bytes through
write, fsync and gzip. A pool of 2,000 distinct records is cycled (repeats are 9 MB
apart, beyond gzip's 32 KB and zstd's few-MB windows).

Both sides start from the record dicts and serialise them with orjson, as the daemon
does. The sink figure runs until ``aclose()`` returns: every record written, fsynced,
rotated and compressed, and is then checked by reading every record back. The plain
figure is one buffered file, closed, never fsynced or compressed: the upper bound. The
two alternate ``--repeat`` times in the same run; the median ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from common import cycle, load_templates, realistic_records, summarise

from kzprobe.config import Compression, OutputConfig
from kzprobe.service import run_loop
from kzprobe.storage.codecs import gzip_codec
from kzprobe.storage.segments import iter_records
from kzprobe.storage.sink import NdjsonSink

POOL = 2000


def bench_plain(pool: list[dict[str, Any]], count: int, directory: Path) -> float:
    start = time.perf_counter()
    with open(directory / "plain.ndjson", "wb") as fh:
        for rec in cycle(pool, count):
            fh.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
    return time.perf_counter() - start


async def bench_sink(pool: list[dict[str, Any]], count: int, directory: Path,
                     rotate_bytes: int, compress: Compression) -> tuple[float, int]:
    """Seconds from the first write until everything is on disk and compressed."""
    sink = NdjsonSink(OutputConfig(dir=directory, rotate_bytes=rotate_bytes, compress=compress))
    await sink.start()
    start = time.perf_counter()
    for rec in cycle(pool, count):
        await sink.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))  # as Daemon._emit
    await sink.aclose()
    return time.perf_counter() - start, sink.stats.segments_rotated


def _plain_side(pool: list[dict[str, Any]], count: int, tmp: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the plain loop."""
    cpu = time.process_time()
    seconds = bench_plain(pool, count, tmp)
    cpu = time.process_time() - cpu
    (tmp / "plain.ndjson").unlink()
    os.sync()  # neither side pays for the other's writeback
    return seconds, cpu


def _sink_side(pool: list[dict[str, Any]], args: argparse.Namespace,
               tmp: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds (all threads: writer, compressor) of the sink, and its segments."""
    out = tmp / "sink"
    cpu = time.process_time()
    seconds, segments = run_loop(bench_sink(pool, args.records, out, args.rotate_bytes,
                                            args.compress))
    cpu = time.process_time() - cpu
    _check(out, args.records)
    shutil.rmtree(out)
    os.sync()
    return seconds, cpu, segments


def _check(directory: Path, count: int) -> None:
    """Every record came back, whole and parseable (outside the timing)."""
    errors: list[tuple[Path, int, str]] = []
    got = sum(1 for _ in iter_records([directory], on_error=lambda *e: errors.append(e)))
    if got != count or errors:
        raise SystemExit(f"sink lost records: {got}/{count}, errors {errors[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--rotate-bytes", type=int, default=8 << 20)
    parser.add_argument("--compress", default="gzip", choices=("gzip", "zstd", "none"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--templates", type=Path, help="NDJSON of kzprobe records to imitate")
    parser.add_argument("--dir", type=Path, help="where to write (default: $TMPDIR or /tmp; "
                        "use a real disk, not a tmpfs, where fsync is free)")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # quiet
    pool = realistic_records(load_templates(args.templates), POOL)
    size = statistics.mean(len(orjson.dumps(r)) + 1 for r in pool)
    ratios, cpu_ratios, sink_rates, plain_rates, segments = [], [], [], [], 0
    for turn in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="kzprobe-bench-writer-", dir=args.dir) as tmp:
            if turn % 2 == 0:  # alternate which side runs first
                plain, plain_cpu = _plain_side(pool, args.records, Path(tmp))
                sink, sink_cpu, segments = _sink_side(pool, args, Path(tmp))
            else:
                sink, sink_cpu, segments = _sink_side(pool, args, Path(tmp))
                plain, plain_cpu = _plain_side(pool, args.records, Path(tmp))
        ratios.append(plain / sink)
        cpu_ratios.append(plain_cpu / sink_cpu)
        sink_rates.append(args.records / sink)
        plain_rates.append(args.records / plain)
    sink_rate = statistics.median(sink_rates)
    print(f"writer: {args.records:,} records of {size / 1000:.1f} KB avg, {args.compress} "
          f"({codec(args.compress)}), {segments} segments of {args.rotate_bytes >> 20} MiB: "
          f"sink {sink_rate:,.0f} rec/s ({sink_rate * size / 1e6:,.0f} MB/s), plain "
          f"orjson+write {statistics.median(plain_rates):,.0f} rec/s; sink/plain = "
          f"{summarise(ratios)}; CPU plain/sink {statistics.median(cpu_ratios):.2f}x")


def codec(method: str) -> str:
    if method != "gzip":
        return method
    module, level = gzip_codec()
    return f"{module.__name__} level {level}"

if __name__ == "__main__":
    main()
