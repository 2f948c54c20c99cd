"""Concurrency: N URLs whose server answers after a delay, measured C at a time.

    .venv/bin/python benchmarks/bench_concurrency.py [--urls 20000] [--concurrency 5000]
                                                     [--delay 1.0] [--no-raw]

Every URL has its own name (s<n>.c.bench, resolved by a local DNS answerer) on one of
2,500 loopback addresses 127.3.x.y, whose HTTP server answers 200 after ``--delay``
seconds (``benchmarks/servers.py``, a separate process). kzprobe keeps its default
per-address gate (``[limits] per_host = 4``): 2,500 addresses x 4 = 10,000 slots, so the
gate never serialises the 5,000 measurements in flight. kzprobe runs as the daemon
(``kzprobe run``, first sweep) so that its own metrics endpoint reports event-loop lag
(``kzprobe_event_loop_lag_max_seconds``: how late a 250 ms timer fired, worst case);
peak RSS is the daemon's VmHWM plus its analysis worker's, from /proc. The ideal wall
time is N / C x delay; the
raw baseline (aiodns + aiohttp, same URLs and concurrency) runs first in the same run.
Every record is then checked with OONI's parser (untimed). Loopback only.
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
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from common import (
    REPO,
    child_pid,
    children,
    cpu_seconds,
    free_port,
    open_fds,
    proc_status,
    py_spy_argv,
    raw_loop,
    raw_loop_sharded,
    verify,
    worker_cpu_seconds,
    write_targets,
)

SERVERS = Path(__file__).with_name("servers.py")
ADDRESSES = 2500


def _config(tmp: Path, urls: list[str], args: argparse.Namespace, dns: str,
            metrics: str) -> Path:
    targets = write_targets(tmp / "targets.csv", urls)
    config = tmp / "kzprobe.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]  # A and AAAA (the default), as the raw loop's getaddrinfo asks
[limits]
rate = 1000000
burst = {args.concurrency}
concurrency = {args.concurrency}
[analysis]
not_bogon = ["127.0.0.0/8"]
[output]
dir = "{tmp / 'out'}"
[schedule]
interval = 86400
[service]
metrics_listen = "{metrics}"
[targets]
files = ["{targets}"]
""")
    return config


def _metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _kzprobe(config: Path, metrics: str, py_spy: Path | None) -> dict[str, Any]:
    """Run the daemon until its first sweep ends; read its figures; stop it."""
    argv = py_spy_argv(py_spy, [sys.executable, "-m", "kzprobe", "run", "--config",
                                str(config)])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stderr is not None
    pid = child_pid(proc.pid) if py_spy is not None else proc.pid
    figures: dict[str, Any] = {}
    try:
        for line in proc.stderr:
            if '"daemon_ready"' in line:
                figures["cpu_start"] = cpu_seconds(pid)
                figures["fds_start"] = open_fds(pid)
            elif '"sweep_finished"' in line:
                figures["sweep"] = orjson.loads(line)
                figures["cpu"] = cpu_seconds(pid) - figures["cpu_start"]
                figures["worker_cpu"] = worker_cpu_seconds(pid)
                figures["status"] = proc_status(pid)
                figures["worker_hwm"] = sum(proc_status(c)["VmHWM"] for c in children(pid))
                figures["lag_max"] = _metric(metrics, "kzprobe_event_loop_lag_max_seconds")
                break
    finally:
        os.kill(pid, signal.SIGTERM)  # the daemon itself, also when py-spy is its parent
        proc.communicate(timeout=120)
    if "sweep" not in figures:
        raise SystemExit(f"kzprobe exited {proc.returncode} before finishing its sweep")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=5_000)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw baselines")
    parser.add_argument("--raw-processes", type=int, default=os.cpu_count() or 1,
                        help="also run the raw loop split over this many processes "
                        "(default: one per core; 1 = skip)")
    parser.add_argument("--py-spy", type=Path, help="record kzprobe's profile with py-spy")
    parser.add_argument("--keep", type=Path, help="copy the records to this directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-conc-"))
    port, dns_port, metrics_port = free_port(), free_port(), free_port()
    server = subprocess.Popen([sys.executable, str(SERVERS), "--port", str(port), "--dns-port",
                               str(dns_port), "--addresses", str(ADDRESSES), "--delay",
                               str(args.delay)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise SystemExit("benchmarks/servers.py did not start")
        dns, metrics = f"127.0.0.1:{dns_port}", f"127.0.0.1:{metrics_port}"
        urls = [f"http://s{i}.c.bench:{port}/" for i in range(args.urls)]
        server_cpu = cpu_seconds(server.pid)
        raw = None if args.no_raw else raw_loop(urls, args.concurrency, dns, None, tmp)
        sharded = (None if args.no_raw or args.raw_processes < 2 else
                   raw_loop_sharded(urls, args.concurrency, dns, args.raw_processes, tmp))
        raw_server_cpu = cpu_seconds(server.pid) - server_cpu
        started = time.perf_counter()
        kz = _kzprobe(_config(tmp, urls, args, dns, metrics), metrics, args.py_spy)
        process_s = time.perf_counter() - started
        kz["server_cpu"] = cpu_seconds(server.pid) - server_cpu - raw_server_cpu
        from kzprobe.storage.segments import iter_records, list_segments

        records = list(iter_records(list_segments([tmp / "out"])))
        if args.keep:
            shutil.copytree(tmp / "out", args.keep, dirs_exist_ok=True)
        checked = verify(records, args.urls)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(_report(args, kz, raw, sharded, records, process_s, checked))


def _report(args: argparse.Namespace, kz: dict[str, Any], raw: dict[str, Any] | None,
            sharded: dict[str, Any] | None, records: list[dict[str, Any]], process_s: float,
            checked: str) -> str:
    ok = sum(1 for r in records
             if (r["test_keys"].get("requests") or [{}])[0].get("response", {}).get("code") == 200)
    ideal = args.urls / args.concurrency * args.delay
    wall = kz["sweep"]["duration_s"]
    cpu_bound = kz["cpu"]  # one event loop: the sweep cannot beat its own CPU time
    lines = [
        f"kzprobe sweep: {ok}/{args.urls} ok in {wall:.1f} s (process {process_s:.1f} s), "
        f"CPU {kz['cpu']:.1f} s = {kz['cpu'] / args.urls * 1000:.2f} ms/measurement "
        f"(+ analysis worker {kz['worker_cpu'] / args.urls * 1000:.2f} ms); "
        f"peak RSS {_peak_mb(kz):.0f} MB (daemon {kz['status']['VmHWM'] / 1024:.0f} + "
        f"analysis worker {kz['worker_hwm'] / 1024:.0f}); event-loop lag max "
        f"{kz['lag_max'] * 1000:.0f} ms; fds at start {kz['fds_start']}; the servers' CPU "
        f"{kz['server_cpu'] / args.urls * 1000:.2f} ms/measurement",
        f"checked: {checked}",
    ]
    if raw is not None:
        lines.append(f"raw aiodns+aiohttp: {raw['ok']}/{args.urls} ok in {raw['seconds']:.1f} s, "
                     f"CPU {raw['cpu'] / args.urls * 1000:.2f} ms/request; "
                     f"kzprobe/raw wall {wall / raw['seconds']:.2f}x")
    if sharded is not None:
        lines.append(f"raw loop on {sharded['processes']} processes (every core): "
                     f"{sharded['ok']}/{args.urls} ok in {sharded['seconds']:.1f} s = "
                     f"{sharded['seconds'] / ideal:.2f}x ideal, CPU "
                     f"{sharded['cpu'] / args.urls * 1000:.2f} ms/request")
    lines.append(
        f"concurrency: {args.urls:,} URLs answering after {args.delay:g} s, {args.concurrency:,} "
        f"in flight: kzprobe {wall:.1f} s = {wall / ideal:.2f}x the ideal {ideal:.1f} s "
        f"(target <= 2x; its CPU alone is {cpu_bound / ideal:.2f}x), peak RSS "
        f"{_peak_mb(kz):.0f} MB (target <= 400), loop lag max "
        f"{kz['lag_max'] * 1000:.0f} ms" +
        (f"; raw loop {raw['seconds']:.1f} s = {raw['seconds'] / ideal:.2f}x ideal"
         if raw else "") +
        (f", on {sharded['processes']} processes {sharded['seconds'] / ideal:.2f}x"
         if sharded else ""))
    return "\n".join(lines)


def _peak_mb(kz: dict[str, Any]) -> float:
    """Peak RSS of the daemon plus its analysis worker (each one's high-water mark)."""
    return float(kz["status"]["VmHWM"] + kz["worker_hwm"]) / 1024


if __name__ == "__main__":
    main()
