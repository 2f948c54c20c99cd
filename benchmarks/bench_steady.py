"""Steady state: the daemon in continuous mode at 10,000 measurements/min for 10 minutes.

    .venv/bin/python benchmarks/bench_steady.py [--minutes 10] [--per-minute 10000]
                                                [--interval 60]

``kzprobe run`` (continuous, not ``--once``) sweeps ``--per-minute`` distinct URLs every
60 s (schedule.interval = 60, no jitter), paced by its own token bucket to finish each
sweep in ~55 s (``--interval`` scales both, for a quick try): half plain HTTP, half
HTTPS (TLS 1.3, throwaway CA), every name resolved by a local DNS answerer, on 250
loopback addresses whose servers answer after 50 ms (``benchmarks/servers.py``).
Records go to gzip NDJSON with the default rotation.

At the end of every sweep (the same point of the cycle: nothing in flight) the daemon's
RSS, open fds and threads are read from /proc. The first two sweeps are warm-up (caches,
allocator arenas, the first rotation); the figures after them must stay flat: RSS growth
<= 10% and no fd growth. The same-run ratios printed are the rate achieved over the rate
asked for, and RSS at the end over RSS after warm-up. Every record is then checked with
OONI's parser (untimed). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import trustme
from common import (
    REPO,
    children,
    family_rss_fds,
    free_port,
    proc_status,
    verify,
    write_targets,
)

SERVERS = Path(__file__).with_name("servers.py")
ADDRESSES = 250
WARMUP_SWEEPS = 2


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since start
    rss_mb: float  # the daemon and its analysis worker
    fds: int  # the same two processes
    threads: int
    measured: int  # measurements in the sweep that just ended
    peak_mb: float  # highest RSS seen during the sweep (sampled every second)
    worker_rss_mb: float = 0.0


def _config(tmp: Path, urls: list[str], interval: float, dns: str, ca: Path,
            metrics: str) -> Path:
    targets = write_targets(tmp / "targets.csv", urls)
    config = tmp / "kzprobe.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]  # A and AAAA, the default
[tls]
ca_file = "{ca}"
[limits]
rate = {len(urls) / (interval * 0.92):.3f}
burst = 10
concurrency = 200
[analysis]
not_bogon = ["127.0.0.0/8"]
[output]
dir = "{tmp / 'out'}"
[schedule]
interval = {interval}
jitter = 0
[service]
metrics_listen = "{metrics}"
[targets]
files = ["{targets}"]
""")
    return config


def _pki(tmp: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("*.c.bench")
    paths = tmp / "ca.pem", tmp / "chain.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths


def _watch(proc: subprocess.Popen[str], started: float, samples: list[Sample],
           peak: list[float]) -> None:
    """Read the daemon's log; sample /proc at the end of every sweep."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"sweep_finished"' not in line:
            continue
        match = re.search(r'"measured": ?(\d+)', line)
        status = proc_status(proc.pid)
        main_rss, main_fds, worker_rss, worker_fds = family_rss_fds(proc.pid)
        rss = main_rss + worker_rss
        samples.append(Sample(at=time.perf_counter() - started, rss_mb=rss,
                              fds=main_fds + worker_fds, threads=status["Threads"],
                              measured=int(match.group(1)) if match else 0,
                              peak_mb=max(peak[0], rss), worker_rss_mb=worker_rss))
        peak[0] = 0.0


def _sample_rss(pid: int, peak: list[float]) -> None:
    """Once a second: the highest RSS since the last sweep ended."""
    try:
        main_rss, _, worker_rss, _ = family_rss_fds(pid)
        peak[0] = max(peak[0], main_rss + worker_rss)
    except (OSError, KeyError):
        pass


def _lag_max(address: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^kzprobe_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _run(config: Path, minutes: float, metrics: str) -> tuple[list[Sample], float, float, int]:
    """Run the daemon for ``minutes``; return samples, elapsed s, loop lag max, peak RSS KiB."""
    proc = subprocess.Popen([sys.executable, "-m", "kzprobe", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    started = time.perf_counter()
    samples: list[Sample] = []
    peak = [0.0]
    reader = threading.Thread(target=_watch, args=(proc, started, samples, peak), daemon=True)
    reader.start()
    try:
        while time.perf_counter() - started < minutes * 60:
            if proc.poll() is not None:
                raise SystemExit(f"kzprobe exited early ({proc.returncode})")
            _sample_rss(proc.pid, peak)
            time.sleep(1)
        lag = _lag_max(metrics)
        peak = proc_status(proc.pid)["VmHWM"] + sum(  # daemon + analysis worker
            proc_status(child)["VmHWM"] for child in children(proc.pid))
        elapsed = time.perf_counter() - started
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(120)
        reader.join(10)
    return [s for s in samples if s.at <= elapsed], elapsed, lag, peak  # not the stop's


def _report(samples: list[Sample], elapsed: float, lag: float, peak_kb: int,
            args: argparse.Namespace, checked: str, records: int) -> str:
    """Per-sweep lines, then the one-line summary."""
    lines = [f"sweep {i + 1} at {s.at:5.0f} s: {s.measured} measured, RSS at its end "
             f"{s.rss_mb:.0f} MB (of which the analysis worker {s.worker_rss_mb:.0f} MB; "
             f"peak during it {s.peak_mb:.0f} MB), {s.fds} fds, "
             f"{s.threads} threads" for i, s in enumerate(samples)]
    if len(samples) <= WARMUP_SWEEPS:
        raise SystemExit("\n".join([*lines, "too few sweeps to judge: run longer"]))
    warm, after = samples[WARMUP_SWEEPS - 1], samples[WARMUP_SWEEPS:]
    growth = max(s.rss_mb for s in after) / warm.rss_mb
    peak_growth = max(s.peak_mb for s in after) / warm.peak_mb
    fd_growth = max(s.fds for s in after) - warm.fds
    rate = records / elapsed * 60
    lines += [
        f"checked: {checked}",
        f"steady: {elapsed / 60:.1f} min of continuous mode, {records:,} records = "
        f"{rate:,.0f}/min ({rate / args.per_minute:.2f}x the {args.per_minute:,}/min asked); "
        f"RSS after warm-up {warm.rss_mb:.0f} MB -> max {max(s.rss_mb for s in after):.0f} MB "
        f"= {growth:.3f}x (target <= 1.10x; in-sweep peaks {peak_growth:.3f}x), "
        f"fds {warm.fds} -> max {max(s.fds for s in after)} (growth {fd_growth:+d}, target 0), "
        f"peak RSS "
        f"{peak_kb / 1024:.0f} MB, loop lag max {lag * 1000:.0f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--per-minute", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between sweeps")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-steady-"))
    ca, chain, key = _pki(tmp)
    port, tls_port, dns_port, metrics_port = (free_port() for _ in range(4))
    server = subprocess.Popen(
        [sys.executable, str(SERVERS), "--port", str(port), "--dns-port", str(dns_port),
         "--addresses", str(ADDRESSES), "--delay", "0.05", "--tls-port", str(tls_port),
         "--cert", str(chain), "--key", str(key)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise SystemExit("benchmarks/servers.py did not start")
        urls = [f"https://s{i}.c.bench:{tls_port}/" if i % 2 else f"http://s{i}.c.bench:{port}/"
                for i in range(round(args.per_minute * args.interval / 60))]
        metrics = f"127.0.0.1:{metrics_port}"
        config = _config(tmp, urls, args.interval, f"127.0.0.1:{dns_port}", ca, metrics)
        samples, elapsed, lag, peak = _run(config, args.minutes, metrics)
        from kzprobe.storage.segments import iter_records, list_segments

        checked = verify(iter_records(list_segments([tmp / "out"])), None)
        records = int(checked.split()[0])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(_report(samples, elapsed, lag, peak, args, checked, records))


if __name__ == "__main__":
    main()
