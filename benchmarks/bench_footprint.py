"""Footprint: what `kzprobe run` costs at default settings, next to a raw aiodns+aiohttp loop.

    .venv/bin/python benchmarks/bench_footprint.py [--scale 1.0] [--sweeps 3] [--interval 90]
                                                   [--idle 10] [--quick] [--no-watch]
                                                   [--profile FILE]

The default configuration's shape on loopback: 2,300 x ``--scale`` HTTPS targets (names
s<n>.c.bench on 16 addresses 127.3.0.x, answered by the lean DNS server of ``servers.py``),
whose bodies follow a log-normal size distribution clipped to 20 KB-2 MB (median 60 KB), served
by an asyncio HTTPS server in this file that reads its own kernel byte counters (TCP_INFO, TLS
included) per connection. `kzprobe run` (the daemon, default [limits], [analysis], [output] and
metrics on) sweeps them ``--sweeps`` times at ``--interval`` seconds (an hourly sweep,
compressed), and a watch group of 20 more targets every ``--interval`` / 60 seconds (a minute
of that hour; their snapshots capped at 64 KiB, as the example config suggests, and served from
``/w/<size>``; 20 x ``--scale``; none with ``--no-watch``), then sits idle for ``--idle``
seconds. Reported: time from the process start to the first request the server sees; CPU
seconds per sweep and per 1,000 measurements (main process + analysis worker); steady RSS
(after the last sweep, idle) and peak RSS (VmHWM); bytes per sweep (the records' x_bytes)
against what the server's sockets sent and received; idle wake-ups per second per thread
(voluntary context switches); then the raw loop (``common.RAW_LOOP``: aiodns lookup + aiohttp
GET of the whole body on a fresh connection) over the same URLs in the same run. ``--quick``:
scale 0.1, 2 sweeps, 30 s interval, 10 s idle. ``--profile FILE``: afterwards (untimed), one
``kzprobe run --once`` over the default group under cProfile with a CPU clock, its stats in
FILE (read them with ``python -m pstats FILE``). Sized for a shared 2-core machine. Only
127.0.0.0/8 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import servers
import trustme
from common import (
    child_pid,
    cpu_seconds,
    free_port,
    proc_status,
    py_spy_argv,
    raw_loop,
    worker_cpu_seconds,
    write_targets,
)

from kzprobe.config.model import LimitConfig

ADDRESSES = servers.addresses(16)
TARGETS = 2300
WATCH = 20  # the watchlist group (issue 16's election-day mode), every minute of the hour
WATCH_BODY = 65536  # its per-group body_bytes
MIN_BODY, MAX_BODY, MEDIAN_BODY = 20_000, 2_000_000, 60_000
DEFAULT_RATE = LimitConfig().rate  # the daemon's default pace, measurements started per second
CAP = 512 * 1024  # [limits] body_bytes: kzprobe reads no further and closes


def body_sizes(count: int, seed: int = 7) -> list[int]:
    """Log-normal body sizes (median 60 KB, sigma 1.0) clipped to 20 KB-2 MB."""
    rng = random.Random(seed)
    return [min(MAX_BODY, max(MIN_BODY, int(rng.lognormvariate(math.log(MEDIAN_BODY), 1.0))))
            for _ in range(count)]


# --------------------------------------------------------------------------- the server


class _Page(asyncio.Protocol):
    """Reads one request for /b/<size> or /w/<size>, answers that many body bytes, closes."""

    BODY = b"k" * MAX_BODY

    def __init__(self, stats: dict[str, int], tally: Any, big: Any) -> None:
        self.stats, self.buffer, self.transport = stats, b"", None
        self.tally, self.big = tally, big  # a body over CAP: counted apart (``big``)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer or self.transport is None:
            return
        match = re.match(rb"GET /([bw])/(\d+)", self.buffer)
        size = min(int(match.group(2)), MAX_BODY) if match else 0
        cap = CAP if not match or match.group(1) == b"b" else WATCH_BODY
        self.stats["requests"] += 1
        self.stats["body_bytes"] += size
        if size > cap:
            self.tally.meter = self.big
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close"
                             b"\r\nContent-Length: %d\r\n\r\n" % size)
        self.transport.write(memoryview(self.BODY)[:size])
        self.transport.close()
        self.buffer = b""


def _retransmitted(tally: Any) -> int:
    """Bytes the kernel sent again on this connection (tcpi_bytes_retrans): loopback under
    load drops and retransmits 64 KB segments; the client counts each byte once."""
    import socket
    import struct

    with contextlib.suppress(OSError, ValueError, AttributeError):
        raw = tally.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        return int(struct.unpack_from("=Q", raw, 208)[0])
    return 0


async def _serve(port: int, cert: str, key: str) -> None:
    """HTTPS on ADDRESSES:port; its sockets' own byte counts, on stdin's request."""
    import ssl

    from kzprobe.measure import traffic

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    stats: dict[str, int] = defaultdict(int)
    first: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    big = traffic.Meter()
    with traffic.metered() as meter:
        class Raw(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                if not first:
                    first.append(time.time())
                    print(f"FIRST {first[0]}", flush=True)
                transport.pause_reading()  # the ClientHello waits for start_tls, not lost
                task = asyncio.ensure_future(self.secure(transport, meter.track(transport)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            async def secure(self, raw: Any, tally: Any) -> None:
                page = _Page(stats, tally, big)
                with contextlib.suppress(Exception):
                    page.connection_made(await loop.start_tls(
                        raw, page, ctx, server_side=True, ssl_handshake_timeout=10))
                    traffic.watch_raw(raw, _Retrans(tally, stats))
                    page.data_received(b"")  # a request that came with the handshake
                    return
                raw.abort()

        await loop.create_server(Raw, ADDRESSES, port, backlog=4096)
        print("READY", flush=True)

        def report() -> None:
            meter.totals()
            print(json.dumps({"sent": meter.sent + big.sent, "retrans": stats["retrans"],
                              "received": meter.received + big.received,
                              "big_sent": big.sent, "big_received": big.received, **stats}),
                  flush=True)

        def commands() -> None:
            for _line in sys.stdin:
                loop.call_soon_threadsafe(report)
            loop.call_soon_threadsafe(loop.stop)

        threading.Thread(target=commands, daemon=True).start()
        await asyncio.Event().wait()


class _Retrans:
    """Stands in for the server connection's tally: also adds up its retransmitted bytes."""

    def __init__(self, tally: Any, stats: dict[str, int]) -> None:
        self.tally, self.stats = tally, stats

    def settle(self, *, final: bool = False) -> None:
        if final and not self.tally.final:
            self.stats["retrans"] += _retransmitted(self.tally)
        self.tally.settle(final=final)


class Server:
    """The HTTPS server subprocess: ``stats()`` asks it for its counters."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(cert), str(key)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first: float | None = None
        if self._line() != "READY":
            raise RuntimeError("server did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline().strip()
            if line.startswith("FIRST "):
                self.first = float(line.split()[1]) if self.first is None else self.first
                continue
            return line

    def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self._line()))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


# --------------------------------------------------------------------------- kzprobe


def _config(tmp: Path, urls: list[str], dns: str, cafile: Path, interval: float,
            watch: list[str]) -> Path:
    """Defaults, except: where the targets, resolver, CA and output are; loopback dialable;
    per_host 64 (2,300 names share 16 addresses here); the compressed intervals; the watch
    group (none if ``watch`` is empty)."""
    targets = write_targets(tmp / "targets.csv", urls)
    config = tmp / "kzprobe.toml"
    config.write_text(f"""
[dns]
resolvers = ["{dns}"]
[tls]
ca_file = "{cafile}"
[limits]
per_host = 64
[schedule]
interval = {interval}
jitter = 0.0
[analysis]
not_bogon = ["127.0.0.0/8"]
[output]
dir = "{tmp / 'out'}"
[service]
metrics_listen = "127.0.0.1:{free_port()}"
[targets]
files = ["{targets}"]
""")
    if watch:
        with config.open("a") as out:
            out.write(f"""[[targets.groups]]
name = "watch"
interval = {interval / 60}
urls = {json.dumps(watch)}
body_bytes = {WATCH_BODY}
""")
    return config


PROFILE = """import cProfile, sys, time
from kzprobe.cli import main
profile = cProfile.Profile(time.process_time)  # CPU, not wall: the machine is shared
try:
    profile.runcall(main, ["run", "--once", "--config", sys.argv[1]])
finally:
    profile.dump_stats(sys.argv[2])
"""


def profile_once(config: Path, output: Path) -> None:
    """``run --once`` over the default group only, under cProfile; stats to ``output``."""
    once = config.with_name("once.toml")
    text = config.read_text()
    once.write_text(text.split("[[targets.groups]]")[0])
    subprocess.run([sys.executable, "-c", PROFILE, str(once), str(output)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _switches(pid: int) -> dict[str, int]:
    """Voluntary context switches per thread (name/tid): how often each one wakes."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
            count = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            found[f"{name}/{task.name}"] = count
    return found


def _family_cpu(pid: int) -> tuple[float, float]:
    return cpu_seconds(pid), worker_cpu_seconds(pid)


def run_daemon(config: Path, server: Server, sweeps: int, idle: float,
               py_spy: Path | None = None) -> dict[str, Any]:
    """`kzprobe run` until ``sweeps`` sweeps finished, then ``idle`` seconds; readings."""
    started = time.time()
    argv = py_spy_argv(py_spy, [sys.executable, "-m", "kzprobe", "run", "--config", str(config)])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    pid = child_pid(proc.pid) if py_spy is not None else proc.pid
    result: dict[str, Any] = {"sweeps": []}
    last = None
    watch = {"measured": 0, "sweeps": 0}  # the watch group's sweeps since the last default one
    try:
        for line in proc.stderr:
            if '"daemon_ready"' in line:
                result["ready_s"] = time.time() - started
                last = _family_cpu(pid)
            elif '"sweep_finished"' in line and last is not None:
                event = json.loads(line)
                if event.get("group", "default") != "default":  # the watch group's, counted
                    watch["measured"] += event["measured"]      # in the next default sweep
                    watch["sweeps"] += 1
                    continue
                now = _family_cpu(pid)
                result["sweeps"].append({"measured": event["measured"] + watch["measured"],
                                         "default": event["measured"],
                                         "watch_sweeps": watch["sweeps"],
                                         "duration_s": event["duration_s"],
                                         "cpu": now[0] - last[0], "worker_cpu": now[1] - last[1],
                                         "rss_mb": proc_status(pid)["VmRSS"] / 1024})
                last, watch = now, {"measured": 0, "sweeps": 0}
                if len(result["sweeps"]) >= sweeps:
                    break
        result["started"] = started
        time.sleep(min(2.0, idle))  # the last records written, the loop settles
        before, cpu0, t0 = _switches(pid), _family_cpu(pid), time.monotonic()
        time.sleep(idle)
        after, cpu1, span = _switches(pid), _family_cpu(pid), time.monotonic() - t0
        status = proc_status(pid)
        result["idle"] = {"seconds": span, "cpu": cpu1[0] - cpu0[0],
                          "wakeups_per_s": {k: round((after[k] - before.get(k, 0)) / span, 1)
                                            for k in after if after[k] != before.get(k, 0)},
                          "rss_mb": status["VmRSS"] / 1024, "peak_rss_mb": status["VmHWM"] / 1024,
                          "threads": status["Threads"]}
    finally:
        os.kill(pid, signal.SIGTERM)  # the daemon itself, also when py-spy is its parent
        for _ in proc.stderr:
            pass
        proc.wait(60)
    return result


def _dns_bytes(record: dict[str, Any]) -> tuple[int, int]:
    """The DNS share of a record's x_bytes (its estimate from the recorded lookups)."""
    from kzprobe.measure.traffic import dns_sizes

    sent = received = 0
    for query in record["test_keys"].get("queries") or []:
        answers = [(a["answer_type"], a.get("ipv4") or a.get("ipv6") or a.get("hostname"))
                   for a in query.get("answers") or []]
        failure = query.get("failure")
        out, back = dns_sizes(query["hostname"], answers,
                              answered=not failure or failure.startswith("dns_"))
        sent, received = sent + out, received + back
    return sent, received


def record_bytes(out: Path) -> dict[str, dict[str, int]]:
    """x_bytes summed per sweep (either group's), from the segments written."""
    from kzprobe.storage.segments import iter_records, list_segments

    per: dict[str, dict[str, int]] = defaultdict(
        lambda: {"sent": 0, "received": 0, "n": 0, "dns_sent": 0, "dns_received": 0,
                 "big_received": 0, "big_sent": 0})
    for record in iter_records(list_segments([out])):
        notes = record["annotations"]
        sweep = per[notes.get("kzprobe_sweep", "?")]
        sweep["default"] = int(notes.get("kzprobe_group", "default") == "default")
        counted = record["test_keys"].get("x_bytes") or {}
        sweep["sent"] += counted.get("sent", 0)
        sweep["received"] += counted.get("received", 0)
        sweep["n"] += 1
        dns_sent, dns_received = _dns_bytes(record)
        sweep["dns_sent"] += dns_sent
        sweep["dns_received"] += dns_received
        kind, size = record["input"].rsplit("/", 2)[1:]
        if int(size) > (CAP if kind == "b" else WATCH_BODY):  # TCP bytes of the big bodies
            sweep["big_sent"] += counted.get("sent", 0) - dns_sent
            sweep["big_received"] += counted.get("received", 0) - dns_received
    return dict(per)


# --------------------------------------------------------------------------- main


def _pki(tmp: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("*.c.bench")
    cafile, cert, key = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return cafile, cert, key


def _paced_line(paced: dict[str, Any], cpu_each: float, main_each: float, targets: int) -> str:
    each = paced["cpu"] / max(paced["ok"], 1)
    return (f"raw loop paced at the daemon's {DEFAULT_RATE:g}/s: {paced['ok']}/{targets} ok, "
            f"CPU {paced['cpu']:.1f} s = {each * 1000:.1f} s per 1,000; kzprobe/paced raw "
            f"{cpu_each / each:.2f}x (main process only {main_each / each:.2f}x)")


def _report(kz: dict[str, Any], served: dict[str, int], counted: dict[str, dict[str, int]],
            raw: dict[str, Any], raw_served: dict[str, int], targets: int,
            watched: int) -> list[str]:
    sweeps = kz["sweeps"]
    steady = sweeps[1:] or sweeps  # the first sweep warms up (imports, caches)
    cpu = sum(s["cpu"] + s["worker_cpu"] for s in steady) / len(steady)
    main_cpu = sum(s["cpu"] for s in steady) / len(steady)
    measured = sum(s["measured"] for s in steady) / len(steady)
    watch_sweeps = sum(s["watch_sweeps"] for s in steady) / len(steady)
    watch_measured = measured - sum(s["default"] for s in steady) / len(steady)
    x_sent = sum(c["sent"] for c in counted.values())
    x_recv = sum(c["received"] for c in counted.values())
    # per default sweep: the watch group's sweeps in between (and in the idle window) are in
    # both the records' and the server's totals
    n = sum(c.get("default", 0) for c in counted.values())
    dns_sent = sum(c["dns_sent"] for c in counted.values())
    dns_recv = sum(c["dns_received"] for c in counted.values())
    big_sent = sum(c["big_sent"] for c in counted.values())
    big_recv = sum(c["big_received"] for c in counted.values())
    tcp_sent, tcp_recv = x_sent - dns_sent, x_recv - dns_recv
    srv_sent, srv_recv = served["sent"] - served.get("retrans", 0), served["received"]
    srv_big_sent, srv_big_recv = served.get("big_sent", 0), served.get("big_received", 0)
    idle = kz["idle"]
    lines = [
        f"targets {targets} + {watched} watched, {len(sweeps)} sweeps, {measured:.0f} measured "
        f"per sweep, of which the watch group {watch_measured:.0f} in {watch_sweeps:.1f} sweeps",
        f"start-up: daemon_ready {kz['ready_s']:.2f} s, first request at the server "
        f"{kz['first_request_s']:.2f} s after the process started",
        f"CPU per sweep {cpu:.1f} s (main {main_cpu:.1f} s + analysis worker "
        f"{cpu - main_cpu:.1f} s) = {cpu / measured * 1000:.1f} s per 1,000 measurements",
        f"raw loop: {raw['ok']}/{targets} ok, CPU {raw['cpu']:.1f} s = "
        f"{raw['cpu'] / max(raw['ok'], 1) * 1000:.1f} s per 1,000; kzprobe/raw "
        f"{cpu / measured / (raw['cpu'] / max(raw['ok'], 1)):.2f}x (main process only "
        f"{main_cpu / measured / (raw['cpu'] / max(raw['ok'], 1)):.2f}x)",
        _paced_line(raw["paced"], cpu / measured, main_cpu / measured, targets),
        f"RSS: steady {idle['rss_mb']:.0f} MB (idle after the last sweep), peak "
        f"{idle['peak_rss_mb']:.0f} MB, "
        f"after each sweep {', '.join(format(s['rss_mb'], '.0f') for s in sweeps)} MB",
        f"bytes per sweep: x_bytes received {x_recv / n / 1e6:.2f} MB, sent "
        f"{x_sent / n / 1e6:.3f} MB (DNS, estimated: {dns_recv / n / 1e3:.0f} KB / "
        f"{dns_sent / n / 1e3:.0f} KB); server sockets sent {srv_sent / n / 1e6:.2f} MB (+ "
        f"{served.get('retrans', 0) / n / 1e6:.2f} MB retransmitted), "
        f"received {srv_recv / n / 1e6:.3f} MB; bodies {served['body_bytes'] / n / 1e6:.2f} MB "
        f"in {served['requests'] / n:.0f} requests",
        f"x_bytes without DNS / server sockets: received {tcp_recv / srv_sent:.3f}, sent "
        f"{tcp_sent / srv_recv:.3f}; bodies <= body_bytes: received "
        f"{(tcp_recv - big_recv) / (srv_sent - srv_big_sent):.3f}, sent "
        f"{(tcp_sent - big_sent) / (srv_recv - srv_big_recv):.3f}; bodies over it (read to "
        f"the cap, then closed): received {big_recv / max(srv_big_sent, 1):.3f}",
        f"raw loop bytes: server sockets sent {raw_served['sent'] / 1e6:.1f} MB in "
        f"{raw_served['requests']} requests",
        f"idle {idle['seconds']:.0f} s{' (the watch group sweeping)' if watched else ''}: "
        f"CPU {idle['cpu']:.3f} s, {idle['threads']} threads, "
        f"wake-ups/s {idle['wakeups_per_s']}",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="x 2,300 targets")
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--interval", type=float, default=90.0, help="compressed hour, seconds")
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--no-watch", action="store_true", help="the default group only")
    parser.add_argument("--profile", type=Path, help="cProfile stats of one run --once")
    parser.add_argument("--py-spy", type=Path, help="the daemon's profile, py-spy raw format")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # the asyncio loop: uvloop's server-side start_tls left ~2 % of handshakes unanswered
        asyncio.run(_serve(int(args.serve[0]), args.serve[1], args.serve[2]))
        return
    if args.quick:
        args.scale, args.sweeps, args.interval, args.idle = 0.1, 2, 30.0, 10.0
    targets = max(1, round(TARGETS * args.scale))
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-footprint-"))
    cafile, cert, key = _pki(tmp)
    port, dns_port = free_port(), free_port()
    dns_proc = subprocess.Popen(
        [sys.executable, str(Path(servers.__file__)), "--port", str(free_port()),
         "--dns-port", str(dns_port), "--addresses", str(len(ADDRESSES))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server = None
    try:
        assert dns_proc.stdout is not None and dns_proc.stdout.readline().startswith("READY")
        server = Server(port, cert, key)
        dns = f"127.0.0.1:{dns_port}"
        urls = [f"https://s{i}.c.bench:{port}/b/{size}"
                for i, size in enumerate(body_sizes(targets))]
        watch = [] if args.no_watch else [
            f"https://s{targets + i}.c.bench:{port}/w/{size}"
            for i, size in enumerate(body_sizes(max(1, round(WATCH * args.scale)), seed=11))]
        config = _config(tmp, urls, dns, cafile, args.interval, watch)
        base = server.stats()
        kz = run_daemon(config, server, args.sweeps, args.idle, args.py_spy)
        after = server.stats()  # also reads the time of the first request
        kz["first_request_s"] = (server.first or math.nan) - kz["started"]
        served = {k: after.get(k, 0) - base.get(k, 0) for k in after}
        counted = record_bytes(tmp / "out")
        raw = raw_loop(urls, 200, dns, cafile, tmp)  # the default group's fetches
        raw_served = {k: v - after.get(k, 0) for k, v in server.stats().items()}
        # the same fetches started at the daemon's default pace, as its sweep starts them
        raw["paced"] = raw_loop(urls, 200, dns, cafile, tmp, rate=DEFAULT_RATE)
        if args.profile:
            profile_once(config, args.profile.resolve())
    finally:
        if server is not None:
            server.close()
        dns_proc.kill()
        dns_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    if os.environ.get("FOOTPRINT_DEBUG"):
        print(json.dumps({"kz": kz, "served": served, "raw": raw, "raw_served": raw_served,
                          "counted": counted}, default=str))
    for line in _report(kz, served, counted, raw, raw_served, targets, len(watch)):
        print(line)
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
