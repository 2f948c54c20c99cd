"""Records/s through NdjsonSink (gzip, rotating) vs plain ``orjson.dumps`` + ``file.write``.

Usage: python benchmarks/bench_writer.py [--records N] [--rotate-bytes B] [--loop asyncio|uvloop]

Both sides serialise the same small records. The sink figure runs until ``aclose()``
returns: every record written, fsynced, rotated and compressed. The plain figure is
one buffered file, closed but never fsynced or compressed, so it is the upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from kzprobe.config import Compression, OutputConfig
from kzprobe.sink import NdjsonSink


def make_records(n: int) -> list[dict[str, Any]]:
    return [{"measurement_uid": f"m{i:08d}", "seq": i, "input": f"https://site{i % 997}.kz/",
             "test_keys": {"dns": "ok", "tcp": [i % 7, i % 13], "blocking": False}}
            for i in range(n)]


def bench_plain(records: list[dict[str, Any]], directory: Path) -> float:
    start = time.perf_counter()
    with open(directory / "plain.ndjson", "wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec) + b"\n")
    return time.perf_counter() - start


async def bench_sink(records: list[dict[str, Any]], directory: Path, rotate_bytes: int,
                     compress: Compression) -> tuple[float, int]:
    sink = NdjsonSink(OutputConfig(dir=directory, rotate_bytes=rotate_bytes, compress=compress))
    await sink.start()
    start = time.perf_counter()
    for rec in records:
        await sink.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
    await sink.aclose()
    return time.perf_counter() - start, sink.stats.segments_rotated


def run(main: Callable[[], Coroutine[Any, Any, tuple[float, int]]], loop: str) -> tuple[float, int]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rotate-bytes", type=int, default=4 << 20)
    parser.add_argument("--compress", default="gzip", choices=("gzip", "zstd", "none"))
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # quiet
    records = make_records(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        plain = bench_plain(records, Path(tmp))
        sink_s, segments = run(lambda: bench_sink(records, Path(tmp) / "sink", args.rotate_bytes,
                                                  args.compress), args.loop)
    n = args.records
    print(f"{n} records: NdjsonSink({args.compress}, {segments} segments, {args.loop}) "
          f"{n / sink_s:,.0f} rec/s; plain orjson+write {n / plain:,.0f} rec/s; "
          f"plain/sink = {plain and sink_s / plain:.2f}x")


if __name__ == "__main__":
    main()
