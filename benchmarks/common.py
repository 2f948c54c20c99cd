"""Helpers shared by the benchmarks: realistic records, process readings, ratio summaries.

Not part of kzprobe: imported by ``benchmarks/bench_*.py`` when they run as scripts
(``python benchmarks/bench_writer.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- /proc readings


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) in KiB and Threads from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                found[key] = int(value.split()[0])
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def write_targets(path: Path, urls: Iterable[str]) -> Path:
    """A Citizen Lab-format target list of ``urls`` (category NEWS) at ``path``."""
    path.write_text("url,category_code,category_description,date_added,source,notes\n" +
                    "".join(f"{u},NEWS,News Media,2024-01-01,bench,\n" for u in urls))
    return path


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), e.g. kzprobe's analysis worker."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def worker_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of ``pid``'s child processes (kzprobe's analysis worker)."""
    total = 0.0
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def family_rss_fds(pid: int) -> tuple[float, int, float, int]:
    """(RSS MB, open fds) of ``pid`` and, summed, of its children (kzprobe's analysis
    worker): a leak in either process counts."""
    status = proc_status(pid)
    child_rss, child_fds = 0.0, 0
    for child in children(pid):
        with contextlib.suppress(OSError, KeyError):
            child_rss += proc_status(child)["VmRSS"] / 1024
            child_fds += open_fds(child)
    return status["VmRSS"] / 1024, open_fds(pid), child_rss, child_fds


def py_spy_argv(output: Path | None, argv: list[str]) -> list[str]:
    """``argv`` run under ``py-spy record`` (raw collapsed stacks, all threads), if asked."""
    if output is None:
        return argv
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [spy, "record", "--threads", "--format", "raw", "-r", "200", "-o", str(output),
            "--", *argv]


def child_pid(parent: int) -> int:
    """The (first) child of ``parent``: the profiled Python under py-spy."""
    for _ in range(200):
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"process {parent} started no child")


# --------------------------------------------------------------------------- ratios


def summarise(ratios: Sequence[float]) -> str:
    """``0.83x (median of 3 same-run pairs: 0.79 0.83 0.90)``."""
    runs = " ".join(f"{r:.2f}" for r in ratios)
    return f"{statistics.median(ratios):.2f}x (median of {len(ratios)} same-run pairs: {runs})"


# --------------------------------------------------------------------------- the raw baseline

RAW_LOOP = r'''
import asyncio, json, resource, ssl, sys, time
import aiohttp, uvloop
from aiohttp.resolver import AsyncResolver

async def main(urls, concurrency, dns, cafile, sync, rate):
    ctx = ssl.create_default_context(cafile=cafile) if cafile != "-" else None
    resolver = AsyncResolver(nameservers=[dns])
    connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, resolver=resolver,
                                     ssl=ctx if ctx else True, limit=0)
    gate = asyncio.Semaphore(concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(url):
            nonlocal ok
            async with gate:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                        await resp.read()
                        ok += resp.status == 200
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    pass
        if sync:  # one of several processes: start together
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        async def paced(index, url):  # started at ``rate`` per second, as a paced sweep
            await asyncio.sleep(index / rate)
            await one(url)
        start, cpu = time.perf_counter(), time.process_time()
        if rate > 0:
            await asyncio.gather(*(paced(i, u) for i, u in enumerate(urls)))
        else:
            await asyncio.gather(*(one(u) for u in urls))
        return ok, time.perf_counter() - start, time.process_time() - cpu

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
urls = json.loads(open(sys.argv[1]).read())
flags = sys.argv[5:]
rate = float(next((f[5:] for f in flags if f.startswith("rate=")), 0))
ok, elapsed, cpu = uvloop.run(main(urls, int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                   "sync" in flags, rate))
print(json.dumps({"ok": ok, "seconds": elapsed, "cpu": cpu}))
'''


def raw_loop(urls: list[str], concurrency: int, dns: str, cafile: Path | None,
             tmp: Path, *, rate: float = 0.0) -> dict[str, Any]:
    """The raw baseline: aiodns lookup + aiohttp GET on a fresh connection per URL, with
    ``concurrency`` in flight (and, with ``rate``, started at that many per second, as a
    paced sweep starts them), in its own process; returns ok, seconds and CPU seconds."""
    script = tmp / "raw.py"
    script.write_text(RAW_LOOP)
    url_file = tmp / "urls.json"
    url_file.write_text(orjson.dumps(urls).decode())
    out = subprocess.run([sys.executable, str(script), str(url_file), str(concurrency), dns,
                          str(cafile) if cafile else "-", *([f"rate={rate}"] if rate else [])],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"raw loop failed: {out.stderr[-2000:]}")
    return dict(orjson.loads(out.stdout))


def raw_loop_sharded(urls: list[str], concurrency: int, dns: str, processes: int,
                     tmp: Path) -> dict[str, Any]:
    """The raw loop split over ``processes`` processes (every n-th URL, an equal share of the
    concurrency), started together once all are ready: what the libraries do on every core.
    Returns ok, the wall seconds from the start to the last one done, and their CPU seconds."""
    script = tmp / "raw.py"
    script.write_text(RAW_LOOP)
    procs = []
    for index in range(processes):
        url_file = tmp / f"urls-{index}.json"
        url_file.write_text(orjson.dumps(urls[index::processes]).decode())
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(url_file), str(max(1, concurrency // processes)),
             dns, "-", "sync"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("raw loop process did not start")
    start = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [orjson.loads(proc.communicate()[0]) for proc in procs]
    wall = time.perf_counter() - start
    if any(proc.returncode for proc in procs):
        raise RuntimeError("raw loop process failed")
    return {"ok": sum(r["ok"] for r in results), "seconds": wall,
            "cpu": sum(r["cpu"] for r in results), "processes": processes}


def verify(records: Iterable[dict[str, Any]], expected: int | None) -> str:
    """Every record loads with OONI's parser and carries both verdicts (run untimed)."""
    from oonidata.dataclient import load_measurement

    count = 0
    for record in records:
        count += 1
        parsed = load_measurement(msmt=record)
        keys = record["test_keys"]
        if type(parsed).__name__ != "WebConnectivity" or not {
                "blocking", "accessible", "interference", "x_attempts"} <= keys.keys():
            raise SystemExit(f"record without its verdict: {record['input']}")
    if expected is not None and count != expected:
        raise SystemExit(f"{count} records for {expected} URLs")
    return f"{count} records load with oonidata and carry their verdicts"


# --------------------------------------------------------------------------- records


def demo_records() -> list[dict[str, Any]]:
    """The records of one ``kzprobe demo`` sweep: every record shape kzprobe writes today.

    The demo covers a plain site, HTTPS sites, DNS lies, SNI resets, timeouts, throttling,
    a blockpage, TLS interception and a dead site, each with its control and verdicts.
    """
    with tempfile.TemporaryDirectory(prefix="kzprobe-bench-demo-") as tmp:
        subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", tmp],
                       check=True, capture_output=True, cwd=REPO, timeout=120)
        from kzprobe.storage.segments import iter_records, list_segments

        return list(iter_records(list_segments([Path(tmp)])))  # not the event log


def load_templates(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return demo_records()
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _fresh_leaf(keys: dict[str, Any], rng: random.Random) -> None:
    """Each site has its own leaf certificate: replace the leaf's bytes, keep its length."""
    for shake in (*keys.get("tls_handshakes", []), *keys.get("x_sni_checks", [])):
        certs = shake.get("peer_certificates") or []
        if certs:
            size = len(base64.b64decode(certs[0]["data"]))
            certs[0]["data"] = base64.b64encode(rng.randbytes(size)).decode()


def vary(template: dict[str, Any], index: int, rng: random.Random) -> dict[str, Any]:
    """A distinct record of the template's shape: another site, times and certificate."""
    record = copy.deepcopy(template)
    site = f"site{index:06d}.example"
    text = orjson.dumps(record).decode()
    host = record["input"].split("/")[2].split(":")[0]
    record = orjson.loads(text.replace(host, site))
    record["measurement_start_time"] = f"2026-01-{1 + index % 28:02d} {index % 24:02d}:00:00"
    record["test_runtime"] = round(rng.uniform(0.05, 5.0), 6)
    keys = record["test_keys"]
    _fresh_leaf(keys, rng)
    for step in ("queries", "tcp_connect", "tls_handshakes", "requests"):
        for item in keys.get(step, []):
            item["t0"], item["t"] = round(rng.uniform(0, 1), 6), round(rng.uniform(1, 3), 6)
    return record


def realistic_records(templates: Sequence[dict[str, Any]], count: int,
                      seed: int = 1) -> list[dict[str, Any]]:
    """``count`` distinct records cycling through the templates' shapes."""
    rng = random.Random(seed)
    return [vary(templates[i % len(templates)], i, rng) for i in range(count)]


def cycle(pool: Sequence[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield pool[i % len(pool)]
