"""Throughput: `kzprobe run --once` over N local HTTPS sites vs a raw aiodns + aiohttp loop.

    .venv/bin/python benchmarks/bench_throughput.py [--urls 1000] [--concurrency 100]
                                                    [--repeat 3] [--control] [--py-spy FILE]

N distinct names (s0.c.bench ...) resolve through one local DNS server (the lean one in
``servers.py``; A and AAAA both sides) to 16 addresses 127.3.0.x, served by one nginx
worker over TLS 1.3 with a throwaway CA. Both sides look up every name and fetch the page
over a fresh TLS connection with the same concurrency; they alternate ``--repeat`` times
in the same run and the median ratio of their rates is printed. kzprobe additionally
records every step (DNS answers, TCP, TLS with the peer chain, HTTP), analyses each
measurement (OONI keys and interference codes) and writes gzip NDJSON, as in production.
Every kzprobe record is then checked (untimed): it loads with OONI's parser (``oonidata``)
and carries its verdict. ``--control`` adds a run against a local ``kzprobe helper``
(which repeats DNS, TCP, TLS and the GET for each URL: twice the work on the same 2
cores).

Rates are the sweep's own duration (the engine measuring N URLs), as the raw loop is
timed; CPU is read from /proc for the same span. Needs nginx (Debian ``nginx-light`` or
``nginx``). Only 127.0.0.0/8 is contacted. ``--py-spy FILE`` records kzprobe's profile
(``py-spy record --format raw``; pip install py-spy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import servers
import trustme
from common import (
    child_pid,
    cpu_seconds,
    free_port,
    py_spy_argv,
    raw_loop,
    summarise,
    verify,
    worker_cpu_seconds,
    write_targets,
)

ADDRESS_COUNT = 16
ADDRESSES = servers.addresses(ADDRESS_COUNT)  # 127.3.0.1-16: s<n>.c.bench -> n mod 16
PAGE = "<html><head><title>Benchmark site</title></head><body>" + "x" * 2000 + "</body></html>"


@dataclass(slots=True)
class Run:
    ok: int
    seconds: float
    cpu: float  # CPU seconds of the measuring process over the same span
    worker_cpu: float = 0.0  # of kzprobe's analysis worker process, over the same span
    process_seconds: float | None = None
    records: list[dict[str, Any]] | None = None

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def _nginx_conf(tmp: Path, port: int, cert: Path, key: Path) -> Path:
    listens = "\n".join(f"        listen {ip}:{port} ssl;" for ip in ADDRESSES)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout 0;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
{listens}
        server_name _;
        location / {{ default_type text/html; return 200 '{PAGE}'; }}
    }}
}}
""")
    return conf


def _start(argv: list[str], ready: str | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if ready is not None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(ready):
            raise RuntimeError(f"{argv[0]} did not start: {line!r}")
    return proc


def _raw(urls: list[str], concurrency: int, dns: str, cafile: Path, tmp: Path) -> Run:
    got = raw_loop(urls, concurrency, dns, cafile, tmp)
    return Run(ok=got["ok"], seconds=got["seconds"], cpu=got["cpu"])


def _kz_config(tmp: Path, urls: list[str], concurrency: int, dns: str, cafile: Path,
               helper: str | None, worker_process: bool = True) -> Path:
    """A config in its own directory ``tmp``; records go to ``tmp/out``."""
    tmp.mkdir()
    out_dir = tmp / "out"
    targets = write_targets(tmp / "targets.csv", urls)
    control = ""
    if helper:
        control = f'[control]\nhelper_url = ["{helper}"]\nconcurrency = {concurrency}\n'
    config = tmp / "kzprobe.toml"
    # per_host = concurrency: 1,000 names share 16 addresses here, which the per-IP gate
    # (default 4) would serialise; real targets are spread over many addresses.
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]  # A and AAAA (the default), as the raw loop's getaddrinfo asks
[tls]
ca_file = "{cafile}"
[limits]
rate = 100000
burst = {concurrency}
concurrency = {concurrency}
per_host = {concurrency}
[analysis]
not_bogon = ["127.0.0.0/8"]
worker_process = {str(worker_process).lower()}
[output]
dir = "{out_dir}"
[service]
metrics_listen = ""
[targets]
files = ["{targets}"]
{control}""")
    return config


def _kzprobe(config: Path, py_spy: Path | None) -> Run:
    argv = py_spy_argv(py_spy, [sys.executable, "-m", "kzprobe", "run", "--once", "--config",
                                str(config)])
    shutil.rmtree(config.parent / "out", ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    pid = child_pid(proc.pid) if py_spy is not None else proc.pid
    cpu_start = worker_start = sweep = None
    for line in proc.stderr:
        if '"daemon_ready"' in line:
            cpu_start, worker_start = cpu_seconds(pid), worker_cpu_seconds(pid)
        elif '"sweep_finished"' in line:
            cpu = cpu_seconds(pid) - (cpu_start or 0.0)
            worker_cpu = worker_cpu_seconds(pid) - (worker_start or 0.0)
            sweep = json.loads(line)
    if proc.wait() != 0 or sweep is None:
        raise RuntimeError(f"kzprobe run failed (exit {proc.returncode})")
    from kzprobe.storage.segments import iter_records, list_segments

    records = list(iter_records(list_segments([config.parent / "out"])))
    ok = sum(1 for r in records
             if (r["test_keys"].get("requests") or [{}])[0].get("response", {}).get("code") == 200)
    return Run(ok=ok, seconds=sweep["duration_s"], cpu=cpu, worker_cpu=worker_cpu, records=records,
               process_seconds=time.perf_counter() - start)


def _helper(tmp: Path, dns: str, cafile: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "helper.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]
[tls]
ca_file = "{cafile}"
[helper]
listen = "127.0.0.1:{port}"
allow_nets = ["127.0.0.0/8"]
max_in_flight = 10000
max_connections = 10000
rate_per_client = 100000
rate_burst = 100000
allowed_ports = ["1-65535"]
max_requests_per_minute = 6000000
client_bytes_per_minute = 100000000000
max_connections_per_client = 10000
per_destination = 10000
""")
    proc = subprocess.Popen([sys.executable, "-m", "kzprobe", "helper", "--config", str(config)],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    return proc, f"http://127.0.0.1:{port}/"


def _pki(tmp: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("*.c.bench")
    cafile, cert, key = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return cafile, cert, key


def _line(name: str, runs: list[Run], raw: list[Run], urls: int) -> str:
    rate = statistics.median(r.rate for r in runs)
    best = min(runs, key=lambda r: r.cpu / max(r.ok, 1))  # the least disturbed run
    cpu_ms = best.cpu / max(best.ok, 1) * 1000
    worker_ms = best.worker_cpu / max(best.ok, 1) * 1000
    ratios = [k.rate / r.rate for k, r in zip(runs, raw, strict=True)]
    ok = min(r.ok for r in runs)
    return (f"{name:>16}: {ok}/{urls} ok, {rate:,.0f}/s ({rate * 60:,.0f}/min), "
            f"CPU {cpu_ms:.2f} ms/measurement (+ analysis worker {worker_ms:.2f} ms); "
            f"ratio to raw {summarise(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--control", action="store_true", help="also run with a local helper")
    parser.add_argument("--inline-analysis", action="store_true",
                        help="judge on the measuring loop ([analysis] worker_process = false)")
    parser.add_argument("--py-spy", type=Path, help="record kzprobe's last run with py-spy")
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        sys.exit("nginx not found: apt-get install nginx-light")
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-"))
    names = [f"s{i}.c.bench" for i in range(args.urls)]
    cafile, cert, key = _pki(tmp)
    port, dns_port = free_port(), free_port()
    procs: list[subprocess.Popen[Any]] = [
        _start(["nginx", "-c", str(_nginx_conf(tmp, port, cert, key))]),
        # DNS from benchmarks/servers.py (hand-rolled on uvloop): a Python DNS library
        # answering two queries per URL would spend the second core both sides need.
        _start([sys.executable, str(Path(servers.__file__)), "--port", str(free_port()),
                "--dns-port", str(dns_port), "--addresses", str(ADDRESS_COUNT)],
               ready="READY"),
    ]
    dns = f"127.0.0.1:{dns_port}"
    urls = [f"https://{name}:{port}/" for name in names]
    results: dict[str, list[Run]] = {"raw": [], "kzprobe": [], "kzprobe+control": []}
    try:
        time.sleep(0.5)
        plain = _kz_config(tmp / "plain", urls, args.concurrency, dns, cafile, None,
                           worker_process=not args.inline_analysis)
        control = None
        if args.control:
            helper, helper_url = _helper(tmp, dns, cafile)
            procs.append(helper)
            control = _kz_config(tmp / "control", urls, args.concurrency, dns, cafile,
                                 helper_url)
        for turn in range(args.repeat):
            spy = args.py_spy if turn == args.repeat - 1 else None
            steps = [("raw", lambda: _raw(urls, args.concurrency, dns, cafile, tmp)),
                     ("kzprobe", lambda: _kzprobe(plain, spy))]  # noqa: B023
            for name, step in steps if turn % 2 == 0 else steps[::-1]:
                results[name].append(step())
            if control is not None:
                results["kzprobe+control"].append(_kzprobe(control, None))
        checked = [verify(runs[-1].records or [], args.urls)
                   for name, runs in results.items() if name != "raw" and runs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    raw = results["raw"]
    raw_rate = statistics.median(r.rate for r in raw)
    raw_cpu = min(r.cpu / max(r.ok, 1) * 1000 for r in raw)
    print(f"{'raw':>16}: {min(r.ok for r in raw)}/{args.urls} ok, {raw_rate:,.0f}/s "
          f"({raw_rate * 60:,.0f}/min), CPU {raw_cpu:.2f} ms/measurement")
    for name in ("kzprobe", "kzprobe+control"):
        if results[name]:
            print(_line(name, results[name], raw, args.urls))
    print(f"{'checked':>16}: {'; '.join(checked)}")
    print(_summary(results, args))


def _summary(results: dict[str, list[Run]], args: argparse.Namespace) -> str:
    raw, kz = results["raw"], results["kzprobe"]
    ratios = [k.rate / r.rate for k, r in zip(kz, raw, strict=True)]
    rate = statistics.median(r.rate for r in kz) * 60
    line = (f"throughput: {args.urls:,} HTTPS URLs at concurrency {args.concurrency}: "
            f"kzprobe {rate:,.0f}/min, {summarise(ratios)} the raw aiodns+aiohttp loop")
    if results["kzprobe+control"]:
        control = [k.rate / r.rate for k, r in zip(results["kzprobe+control"], raw, strict=True)]
        line += f"; with a local helper {statistics.median(control):.2f}x"
    return line


if __name__ == "__main__":
    main()
