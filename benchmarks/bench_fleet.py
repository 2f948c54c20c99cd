"""The fleet report on N generated records: DuckDB (1 GB memory limit) and Spark ``local[2]``.

Usage: python benchmarks/bench_fleet.py [--records N] [--data DIR] [--engines duckdb,spark]

The data is a Parquet store as ``kzprobe export`` writes it (hive partitions
``probe_cc=/probe_asn=/date=``, the columns of docs/parquet-schema.md that the report reads),
made on the fly by DuckDB from ``range(N)``: 8 probes on 5 networks (two networks with two
probes), 2,000 targets, one sweep every 5 minutes, so 10 M records are ~2.2 days. About a
third of the targets are blocked on a network (which ones depends on the network), a tenth
flip every ~4 hours, mechanisms differ by target and network, some sweeps fall in an outage,
and one probe stops writing half way (the ``probes`` table must show it).

Each engine runs ``kzprobe report STORE --format json`` as its own process, Python start and
(for Spark) the JVM's included: wall time, and the peak RSS of the process and its children
summed, sampled every 0.2 s (Spark's JVM is the Python driver's child). The two JSON reports
must be byte-identical: the same tables from the same queries.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from common import family_rss_fds

PROBES = (("vps1", "AS9198", "JSC Kazakhtelecom"), ("vps2", "AS9198", "JSC Kazakhtelecom"),
          ("vps3", "AS21299", "Kar-Tel LLC (Beeline)"), ("vps4", "AS21299", "Kar-Tel LLC"),
          ("vps5", "AS206026", "Kcell JSC"), ("vps6", "AS48503", "Tele2 Kazakhstan"),
          ("vps7", "AS35104", "JSC Transtelecom"), ("vps8", "AS206026", "Kcell JSC"))
TARGETS = 2000
INTERVAL = 300
SILENT_PROBE = 7  # vps8 stops half way
MECHANISMS = ("tls.timeout", "tls.reset", "dns.nxdomain", "dns.bogon", "http.blockpage",
              "tls.mitm", "tls.reset+tls.timeout")
CATEGORIES = ("NEWS", "POLR", "HUMR", "GRP", "ANON", "COMT", "MMED", "MISC")

_GENERATE = """
COPY (
WITH probes(p, probe_id, probe_asn, probe_network_name) AS (VALUES {probes}),
g AS (
    SELECT i, i % {n_probes} AS p, (i // {n_probes}) % {targets} AS t,
        i // ({n_probes} * {targets}) AS sweep
    FROM range({records}) r(i)
), v AS (
    SELECT g.*, probes.*, (hash(t, probe_asn) % 100)::BIGINT AS h, (hash(t) % 7)::BIGINT AS k,
        hash(p, sweep // 12) % 40 = 0 AS outage
    FROM g JOIN probes USING (p)
    WHERE NOT (p = {silent} AND sweep > {sweeps} // 2)
), s AS (
    SELECT *, CASE WHEN outage THEN 'unknown'
        WHEN h < 30 OR (h < 40 AND (sweep // 48) % 2 = 0) THEN 'blocked'
        WHEN h = 99 THEN 'down' ELSE 'accessible' END AS state
    FROM v
)
SELECT TIMESTAMP '2026-11-01 00:00:00' + to_seconds(sweep * {interval} + t % 240 + p)
        AS measurement_start_time,
    'https://site' || t || '.example.kz/' AS input, 'KZ' AS probe_cc, probe_asn, probe_id,
    probe_network_name, '10.0.0.' || (p + 1) AS resolver_ip, 'web_connectivity' AS test_name,
    '0.5.28' AS test_version, 'kzprobe' AS software_name, '0.1.0' AS software_version,
    {categories}[1 + t % 8] AS category_code, 0.2 + (h % 50) / 10 AS test_runtime,
    strftime(TIMESTAMP '2026-11-01' + to_seconds(sweep * {interval}), '%Y%m%dT%H%M') AS sweep_id,
    state,
    CASE WHEN state = 'blocked' THEN {mechanisms}[1 + (k + (h % 2)) % 7] END AS mechanism,
    CASE WHEN state = 'blocked' THEN 'http-failure' END AS ooni_blocking,
    CASE WHEN state = 'blocked' THEN true WHEN state IN ('accessible', 'down') THEN false
        END AS ooni_blocked,
    state = 'accessible' AS accessible, NULL::BOOLEAN AS reachable, NULL::VARCHAR AS failure,
    CASE WHEN state = 'blocked' THEN string_split({mechanisms}[1 + (k + (h % 2)) % 7], '+')
        ELSE []::VARCHAR[] END AS interference,
    CASE WHEN state = 'blocked' AND k = 4 THEN 'cp.d_corp_kz_ps' END AS blockpage,
    CASE WHEN state = 'blocked' AND k = 5 THEN 'Security Certificate' END AS tls_mitm_issuer,
    NULL::VARCHAR AS x_tls_mitm_known, NULL::BOOLEAN AS sni_blocking_confirmed,
    CASE WHEN state = 'blocked' AND k IN (2, 3) THEN 'dns_nxdomain_error' END
        AS dns_experiment_failure,
    CASE WHEN state IN ('blocked', 'down') AND k NOT IN (2, 3) THEN 'generic_timeout_error' END
        AS http_experiment_failure,
    1 + (h % 3)::INTEGER AS x_attempts, 1 + (h % 3)::INTEGER AS x_attempts_agreeing,
    CASE WHEN outage THEN 'international_outage' ELSE 'online' END AS x_network_state,
    outage AS x_outage,
    (TIMESTAMP '2026-11-01' + to_seconds(sweep * {interval}))::DATE AS date
FROM s
) TO '{out}' (FORMAT parquet, PARTITION_BY (probe_cc, probe_asn, date), COMPRESSION zstd)
"""


def generate(store: Path, records: int) -> float:
    """Write the store; returns the seconds it took."""
    sweeps = records // (len(PROBES) * TARGETS) + 1
    probes = ", ".join(f"({i}, '{pid}', '{asn}', '{name}')"
                       for i, (pid, asn, name) in enumerate(PROBES))
    text = _GENERATE.format(
        probes=probes, n_probes=len(PROBES), targets=TARGETS, records=records,
        silent=SILENT_PROBE, sweeps=sweeps, interval=INTERVAL,
        categories="[" + ", ".join(f"'{c}'" for c in CATEGORIES) + "]",
        mechanisms="[" + ", ".join(f"'{m}'" for m in MECHANISMS) + "]",
        out=store / "measurements")
    store.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(text)
    con.close()
    return time.perf_counter() - started


def run_report(store: Path, engine: str, out: Path, memory_limit: str) -> tuple[float, float]:
    """One report in its own process: wall seconds and the peak RSS (MB) of the process
    and its children summed (Spark's JVM is a child of the Python driver), sampled."""
    argv = [sys.executable, "-m", "kzprobe", "report", str(store), "--format", "json",
            "--output", str(out), "--engine", engine, "--memory-limit", memory_limit]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError, KeyError):
            rss, _, child_rss, _ = family_rss_fds(proc.pid)
            peak = max(peak, rss + child_rss)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{engine}: exit {proc.returncode}\n{err[-2000:]}")
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, help="keep the store here (default: a temp dir)")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--memory-limit", default="1GB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        store = args.data or Path(tmp) / "store"
        if not (store / "measurements").is_dir():
            seconds = generate(store, args.records)
            print(f"generated {args.records:,} records in {seconds:.1f} s")
        size = sum(p.stat().st_size for p in store.rglob("*.parquet")) / 1e6
        print(f"store: {size:,.1f} MB of Parquet (zstd)")
        outputs = {}
        for engine in args.engines.split(","):
            out = Path(tmp) / f"{engine}.json"
            load = os.getloadavg()[0]  # a shared 2-core machine: the figure needs its load
            wall, rss = run_report(store, engine, out, args.memory_limit)
            outputs[engine] = out.read_bytes()
            rate = args.records / wall
            print(f"{engine:7s} wall {wall:7.1f} s  {rate:12,.0f} records/s  "
                  f"peak RSS {rss:7,.0f} MB  (--memory-limit {args.memory_limit})  "
                  f"load {load:.1f} -> {os.getloadavg()[0]:.1f}  {time.strftime('%H:%M')} UTC")
        if len(outputs) == 2:
            same = len(set(outputs.values())) == 1
            print(f"JSON reports identical: {same}")


if __name__ == "__main__":
    main()
