"""Export: `kzprobe export` into the Parquet store vs a bare DuckDB ``COPY`` of the same segments.

    .venv/bin/python benchmarks/bench_export.py [--records 200000] [--segments 20] [--repeat 3]

Segments are written by the project's own writer (``NdjsonSink``, gzip) from realistic
records (the shapes of one ``kzprobe demo`` sweep, each copy with its own site, times and
certificate bytes, as in the writer benchmark) spread over three probe networks and two
days. The baseline is the least any export must do with DuckDB: one ``read_json`` of every
segment with the same fields ``kzprobe report`` materialises (``kzprobe.report.sql``) and
``COPY ... TO ... (FORMAT PARQUET, PARTITION_BY (probe_cc, probe_asn, date))``, in a fresh
process. `kzprobe export SEGMENTS --to DIR` (a fresh process too) does that and more: per
segment, the state and mechanism columns, the segment and line of every row, the events,
and the manifest that makes it incremental and crash-safe. The two alternate ``--repeat``
times into fresh directories; printed: seconds, rows/s, the CPU seconds each used (on a
shared machine the wall clock follows its share of the cores) and the median throughput
ratio (kzprobe / COPY; issue 21's target >= 0.7x). Untimed, each run checks that the
export holds as many rows as the COPY. Nothing is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson
from common import load_templates, realistic_records, summarise

from kzprobe.config import OutputConfig
from kzprobe.storage.sink import NdjsonSink

NETWORKS = (("KZ", "AS9198"), ("KZ", "AS21299"), ("KZ", "AS48503"))

COPY = """
import sys, duckdb
from kzprobe.report.sql import _COLUMNS
files, out = sys.argv[1].split(","), sys.argv[2]
con = duckdb.connect()
con.execute(f'''COPY (
    SELECT *, strftime(try_strptime(measurement_start_time, '%Y-%m-%d %H:%M:%S'), '%Y-%m-%d')
        AS date
    FROM read_json($1, columns = {_COLUMNS}, format = 'newline_delimited',
                   ignore_errors = true)
) TO '{out}' (FORMAT PARQUET, PARTITION_BY (probe_cc, probe_asn, date))''', [files])
"""


async def write_segments(directory: Path, records: list[dict[str, Any]], segments: int) -> None:
    """``records`` through the project's writer into ``segments`` gzip segments per run."""
    per = len(records) // segments + 1
    sink = NdjsonSink(OutputConfig(dir=directory, rotate_bytes=1 << 40, compress="gzip"))
    await sink.start()
    for index, record in enumerate(records):
        await sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if (index + 1) % per == 0:
            await sink.rotate()
    await sink.aclose()


def shaped(templates: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Realistic records on three networks over two days."""
    rng = random.Random(3)
    records = realistic_records(templates, count)
    for index, record in enumerate(records):
        cc, asn = NETWORKS[index % len(NETWORKS)]
        second = rng.randrange(2 * 86400)
        record.update(probe_cc=cc, probe_asn=asn, measurement_start_time=time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime(1_733_011_200 + second)))
    return records


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rows(directory: Path) -> int:
    """The rows in a Parquet tree (both sides write one)."""
    found = duckdb.connect().execute(
        "SELECT count(*) FROM read_parquet($1)", [f"{directory}/**/*.parquet"]).fetchone()
    return int(found[0]) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-export-"))
    try:
        data = tmp / "data"
        records = shaped(load_templates(None), args.records)
        asyncio.run(write_segments(data, records, args.segments))
        del records
        files = sorted(str(p) for p in data.glob("*.ndjson.gz"))
        size = sum(Path(f).stat().st_size for f in files) / 1e6
        print(f"{args.records:,} records in {len(files)} gzip segments, {size:.0f} MB",
              flush=True)
        ratios = []
        for run in range(args.repeat):
            copy, copy_cpu = timed([sys.executable, "-c", COPY, ",".join(files),
                                    str(tmp / f"c{run}")])
            export, export_cpu = timed([sys.executable, "-m", "kzprobe", "export", *files,
                                        "--to", str(tmp / f"k{run}")])
            copied, exported = rows(tmp / f"c{run}"), rows(tmp / f"k{run}/measurements")
            if copied != exported:
                sys.exit(f"export wrote {exported:,} rows, the COPY {copied:,}")
            ratios.append(copy / export)
            print(f"  run {run + 1}: COPY {copy:.1f} s ({args.records / copy:,.0f} rows/s, "
                  f"{copy_cpu:.1f} s CPU), kzprobe export {export:.1f} s "
                  f"({args.records / export:,.0f} rows/s, {export_cpu:.1f} s CPU): "
                  f"{copy / export:.2f}x, load {os.getloadavg()[0]:.1f}", flush=True)
            shutil.rmtree(tmp / f"c{run}")
            shutil.rmtree(tmp / f"k{run}")
        print(f"export: {args.records:,} records, kzprobe export / bare DuckDB COPY "
              f"throughput {summarise(ratios)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
