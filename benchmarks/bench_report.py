"""``kzprobe report --format json`` time as a ratio to DuckDB's bare scan of the same files.

Usage: python benchmarks/bench_report.py [--records N] [--data DIR] [--repeat R]

Records are real kzprobe records: one ``kzprobe demo`` sweep (a simulated network on
loopback) gives a template per verdict; each generated record is the template of its
target's state at that sweep, with its own URL, time, network, certificate bytes and
timings, so it compresses like real data (~7x). Two probes on two networks, 1,000 targets
each, some blocked all along, some flipping, some changing mechanism, a few down or
unknown; written as gzip segments rotated at 64 MiB of NDJSON, as the sink does.

Each command runs as its own process (Python start and imports included on both
sides), alternately, ``--repeat`` times; the best time of each is compared. Peak RSS is
the process's own (``wait4``). Baselines, on the same files in the same run:

* ``bare``: ``SELECT count(*) FROM read_json([...])``, the issue's yardstick;
* ``objects``: ``SELECT count(*) FROM read_ndjson_objects([...])``, the least work DuckDB
  does to read every line as JSON (no schema detection): the stricter yardstick.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

ROTATE_BYTES = 64 << 20
TARGETS = 1000
INTERVAL = 300  # seconds between sweeps, the deployment default
START = 1_717_200_000  # 2024-06-01 00:00 UTC
NETWORKS = (("AS9198", "JSC Kazakhtelecom"), ("AS206026", "Kcell JSC"))
CATEGORIES = ("NEWS", "POLR", "HUMR", "GRP", "ANON", "COMT", "MMED", "MISC")
BLOCKED_KINDS = ("tls.timeout", "tls.reset", "dns.nxdomain", "dns.bogon", "http.blockpage",
                 "tls.mitm", "throttling")


def harvest_templates() -> dict[str, dict[str, Any]]:
    """One real record per verdict, from a ``kzprobe demo`` sweep on loopback."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", tmp],
                       check=True, capture_output=True, timeout=300)
        records = [orjson.loads(line) for path in Path(tmp).glob("*.ndjson*")
                   for line in path.read_bytes().splitlines()]
    templates: dict[str, dict[str, Any]] = {}
    for record in records:
        keys = record["test_keys"]
        kind = "+".join(keys["interference"]) or ("ok" if keys["accessible"] else "down")
        templates.setdefault(kind, record)
    unknown = orjson.loads(orjson.dumps(templates["ok"]))
    unknown["test_keys"].update(blocking=None, accessible=None)
    templates["unknown"] = unknown
    return templates


def _perturb(value: Any, rng: random.Random) -> Any:
    """Per-target certificate bytes, digests and timings: entropy where real records have it."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                out[key] = base64.b64encode(rng.randbytes(len(item) * 3 // 4)).decode()
            elif key in ("t0", "t", "test_runtime") and isinstance(item, float):
                out[key] = round(rng.random() * 2, 6)
            elif key.endswith("sha256") and isinstance(item, str):
                out[key] = rng.randbytes(32).hex()
            else:
                out[key] = _perturb(item, rng)
        return out
    if isinstance(value, list):
        return [_perturb(item, rng) for item in value]
    return value


def state_of(target: int, network: int, sweep: int) -> str:
    """The scripted verdict of one target on one network at one sweep."""
    role = target % 20
    if role < 2:  # blocked all along, the same way on both networks
        return BLOCKED_KINDS[target % len(BLOCKED_KINDS)]
    if role == 2:  # blocked on one network only (interception on the mobile operator)
        return "tls.mitm" if network == 1 else "ok"
    if role == 3:  # blocked for stretches of a few hours, then lifted
        return BLOCKED_KINDS[target % 3] if (sweep + target) % 96 < 30 else "ok"
    if role == 4:  # the censor switches technique
        return "tls.reset" if (sweep // 200) % 2 else "tls.timeout"
    if role == 5 and sweep % 50 == target % 50:
        return "unknown"
    if role == 6 and sweep % 7 == 0:
        return "down"
    return "ok"


def _sweep(templates: dict[str, dict[str, Any]], cache: dict[tuple[int, str], dict[str, Any]],
           network: int, sweep: int) -> bytes:
    """One sweep of every target on one network, as NDJSON."""
    asn, name = NETWORKS[network]
    out = bytearray()
    for target in range(TARGETS):
        kind = state_of(target, network, sweep)
        if (target, kind) not in cache:
            cache[target, kind] = _perturb(templates[kind], random.Random(target))
        record = dict(cache[target, kind])
        when = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.gmtime(START + sweep * INTERVAL + target * 0.25))
        record.update(input=f"https://site{target}.example.kz/", probe_asn=asn,
                      probe_network_name=name, measurement_start_time=when,
                      test_start_time=when, category_code=CATEGORIES[target % 8])
        out += orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    return bytes(out)


def write_segments(job: tuple[dict[str, dict[str, Any]], Path, int, int, int]) -> int:
    """One network's sweeps ``[first, last)`` as rotated gzip segments; returns the count."""
    templates, out, network, first, last = job
    cache: dict[tuple[int, str], dict[str, Any]] = {}
    segments, sweep = 0, first
    while sweep < last:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(START + sweep * INTERVAL))
        path = out / f"kzprobe-{stamp}-vps{network}-{100 + network}-{sweep:06d}.ndjson.gz"
        with gzip.open(path, "wb", compresslevel=6) as fh:
            written = 0
            while sweep < last and written < ROTATE_BYTES:
                written += fh.write(_sweep(templates, cache, network, sweep))
                sweep += 1
        segments += 1
    return segments


def generate(out: Path, records: int) -> None:
    """``records`` records over two networks, written by two processes in parallel."""
    templates = harvest_templates()
    sweeps = max(1, records // (TARGETS * len(NETWORKS)))
    step = max(1, sweeps // 8)
    jobs = [(templates, out, network, first, min(sweeps, first + step))
            for network in range(len(NETWORKS)) for first in range(0, sweeps, step)]
    with ProcessPoolExecutor(2) as pool:
        segments = sum(pool.map(write_segments, jobs))
    (out / "GENERATED").write_text(f"{records}\n")
    print(f"generated {sweeps * TARGETS * len(NETWORKS)} records in {segments} segments")


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (bytes) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} exited {proc.returncode}: {out[-500:]!r}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def duckdb_count(files: list[str], function: str) -> list[str]:
    code = ("import duckdb, sys\n"
            f"print(duckdb.sql(\"SELECT count(*) FROM {function}({files!r})\").fetchall())")
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="keep generated data here (reused if there)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        data = args.data or Path(tmp) / "data"
        data.mkdir(parents=True, exist_ok=True)
        marker = data / "GENERATED"
        if not marker.exists() or marker.read_text().strip() != str(args.records):
            for old in data.glob("*.ndjson.gz"):
                old.unlink()
            generate(data, args.records)
        files = sorted(str(p) for p in data.glob("*.ndjson.gz"))
        size = sum(os.path.getsize(f) for f in files)
        print(f"{len(files)} gzip segments, {size / 1e6:.0f} MB compressed")
        for f in files:  # the page cache, warm for everyone
            Path(f).read_bytes()
        commands = {
            "bare": duckdb_count(files, "read_json"),
            "objects": duckdb_count(files, "read_ndjson_objects"),
            "report": [sys.executable, "-m", "kzprobe", "report", str(data), "--format", "json",
                       "--output", str(Path(tmp) / "report.json")],
        }
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, argv in commands.items():
                run = timed(argv)
                runs[name].append(run)
                print(f"  {name:8s} {run[0]:6.2f} s wall {run[1]:6.2f} s CPU "
                      f"peak RSS {run[2] / 2**20:5.0f} MiB", flush=True)
        summary = orjson.loads((Path(tmp) / "report.json").read_bytes())["summary"]
    print(f"report: {summary['records']} records, {summary['changes']} changes, "
          f"{summary['targets_blocked_now']} targets blocked now")
    for index, what in ((0, "wall"), (1, "CPU")):
        best = {name: min(r[index] for r in rs) for name, rs in runs.items()}
        median = {name: statistics.median(r[index] for r in rs) for name, rs in runs.items()}
        for name in ("bare", "objects"):
            print(f"report / {name} ({what}): {best['report'] / best[name]:.2f}x best "
                  f"({best['report']:.2f} s vs {best[name]:.2f} s), "
                  f"{median['report'] / median[name]:.2f}x median")
    peak = {name: max(r[2] for r in rs) for name, rs in runs.items()}
    print("peak RSS: " + ", ".join(f"{n} {m / 2**20:.0f} MiB" for n, m in peak.items()))


if __name__ == "__main__":
    main()
