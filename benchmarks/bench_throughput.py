"""Throughput: `kzprobe run --once` over N local HTTPS sites vs a raw aiodns + aiohttp loop.

Both sides resolve every distinct name through the same local DNS server and fetch the page
over a fresh TLS connection from the same nginx, with the same concurrency, in the same run;
the ratio is what matters on a noisy shared machine. kzprobe additionally records every
step, analyses each measurement and writes gzip NDJSON, as in production.

    .venv/bin/python benchmarks/bench_throughput.py [--urls 1000] [--concurrency 100]
                                                    [--control]

Needs nginx (Debian package `nginx-light` or `nginx`). Only 127.0.0.0/8 is contacted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

ADDRESSES = [f"127.0.1.{i}" for i in range(1, 17)]
PAGE = "<html><head><title>Benchmark site</title></head><body>" + "x" * 2000 + "</body></html>"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


RAW_LOOP = r'''
import asyncio, json, ssl, sys, time
import aiohttp, uvloop
from aiohttp.resolver import AsyncResolver

async def main(urls, concurrency, dns, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    resolver = AsyncResolver(nameservers=[dns])
    connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, resolver=resolver,
                                     ssl=ctx, limit=0)
    gate = asyncio.Semaphore(concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(url):
            nonlocal ok
            async with gate:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    await resp.read()
                    ok += resp.status == 200
        start = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        return ok, time.perf_counter() - start

urls = json.loads(open(sys.argv[1]).read())
ok, elapsed = uvloop.run(main(urls, int(sys.argv[2]), sys.argv[3], sys.argv[4]))
print(json.dumps({"ok": ok, "seconds": elapsed}))
'''


def _raw(urls: list[str], concurrency: int, dns: str, cafile: Path, tmp: Path) -> dict[str, float]:
    script = tmp / "raw.py"
    script.write_text(RAW_LOOP)
    url_file = tmp / "urls.json"
    url_file.write_text(json.dumps(urls))
    out = subprocess.run([sys.executable, str(script), str(url_file), str(concurrency), dns,
                          str(cafile)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"raw loop failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _kzprobe(urls: list[str], concurrency: int, dns: str, cafile: Path, tmp: Path,
             helper: str | None) -> dict[str, float]:
    out_dir = tmp / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    targets = tmp / "targets.csv"
    targets.write_text("url,category_code,category_description,date_added,source,notes\n" +
                       "".join(f"{u},NEWS,News Media,2024-01-01,bench,\n" for u in urls))
    control = ""
    if helper:
        control = f'[control]\nhelper_url = ["{helper}"]\nconcurrency = {concurrency}\n'
    config = tmp / "kzprobe.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]
query_aaaa = false
[tls]
ca_file = "{cafile}"
[limits]
rate = 100000
burst = {concurrency}
concurrency = {concurrency}
per_host = {concurrency}
[analysis]
not_bogon = ["127.0.0.0/8"]
[output]
dir = "{out_dir}"
[targets]
files = ["{targets}"]
{control}""")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kzprobe", "run", "--once", "--config",
                           str(config)], check=True, capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    sweep = next(json.loads(line) for line in done.stderr.splitlines()
                 if '"sweep_finished"' in line)
    from kzprobe.segments import iter_records, list_segments

    records = list(iter_records(list_segments([out_dir])))
    ok = sum(1 for r in records
             if (r["test_keys"].get("requests") or [{}])[0].get("response", {}).get("code") == 200)
    # The sweep's own duration (the engine measuring N URLs), as the raw loop is timed; the
    # whole process (interpreter start, imports, closing and compressing files) is shown too.
    return {"ok": ok, "seconds": sweep["duration_s"], "records": len(records),
            "process_seconds": process_seconds}


def _helper(tmp: Path, dns: str, cafile: Path) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    config = tmp / "helper.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]
query_aaaa = false
[tls]
ca_file = "{cafile}"
[helper]
listen = "127.0.0.1:{port}"
allow_nets = ["127.0.0.0/8"]
max_in_flight = 10000
rate_per_client = 100000
rate_burst = 100000
""")
    proc = subprocess.Popen([sys.executable, "-m", "kzprobe", "helper", "--config", str(config)],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    return proc, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--control", action="store_true", help="also run with a local helper")
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        sys.exit("nginx not found: apt-get install nginx-light")
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-bench-"))
    names = [f"site{i}.kz.bench" for i in range(args.urls)]
    ca = trustme.CA()
    leaf = ca.issue_cert("*.kz.bench")
    cafile, cert, key = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    port, dns_port = _free_port(), _free_port()
    zone = {name: [ADDRESSES[i % len(ADDRESSES)]] for i, name in enumerate(names)}
    (tmp / "zone.json").write_text(json.dumps({"zone": zone, "default": "answer"}))
    procs = [
        _start(["nginx", "-c", str(_nginx_conf(tmp, port, cert, key))]),
        _start([sys.executable, "-m", "kzprobe.simnet", "dns", "--listen",
                f"127.0.0.1:{dns_port}", "--rules", str(tmp / "zone.json")], ready="READY"),
    ]
    dns = f"127.0.0.1:{dns_port}"
    urls = [f"https://{name}:{port}/" for name in names]
    try:
        time.sleep(0.5)
        raw = _raw(urls, args.concurrency, dns, cafile, tmp)
        kz = _kzprobe(urls, args.concurrency, dns, cafile, tmp, None)
        results = {"raw": raw, "kzprobe": kz}
        if args.control:
            helper, helper_url = _helper(tmp, dns, cafile)
            procs.append(helper)  # type: ignore[arg-type]
            results["kzprobe+control"] = _kzprobe(urls, args.concurrency, dns, cafile, tmp,
                                                  helper_url)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    raw_rate = raw["ok"] / raw["seconds"]
    for name, result in results.items():
        rate = result["ok"] / result["seconds"]
        extra = (f" (whole process {result['process_seconds']:.2f} s)"
                 if "process_seconds" in result else "")
        print(f"{name:>16}: {result['ok']}/{args.urls} ok in {result['seconds']:.2f} s{extra} = "
              f"{rate:,.0f}/s ({rate * 60:,.0f}/min), ratio to raw {rate / raw_rate:.2f}x")


if __name__ == "__main__":
    main()
