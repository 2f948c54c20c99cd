"""The daily bandwidth budget over a whole day, compressed: is ``[limits] daily_bytes`` kept?

    .venv/bin/python benchmarks/bench_budget.py [--speed 300] [--budget-sweeps 10]

`kzprobe run` (the real daemon: scheduler, engine, writer) runs under libfaketime (Debian's
``faketime``, ``apt-get install faketime``) with its clocks ``--speed`` times faster than
real, from 00:00:00 UTC of a fake day to just past its end: one UTC budget day in 86,400 /
``--speed`` real seconds (4.8 min at 300). Its targets are plain-HTTP pages on 127.0.0.1
served by a thread of this process, at real speed: 20 default-group targets (log-normal
bodies, median 60 KB, swept every fake hour, the default [schedule]) and a watch group of 2
targets (20 KB each) every 5 fake minutes. ``daily_bytes`` is the watch group's day plus
``--budget-sweeps`` default sweeps: less than the 24 hourly sweeps would need, so the
scheduler must stretch the default group's interval (never the watch group's) to fit.

Reported, from the records written (their ``x_bytes``, by ``measurement_start_time`` in the
fake day): bytes used against the budget (target: within 5 %, issue 22), default and watch
sweeps, and what an unbudgeted day would have used. Every clock of the daemon is faster,
measurement timeouts included (a 10 s timeout is 33 ms real at 300x), so keep ``--speed``
low enough that a loopback fetch stays well inside them; a timed-out fetch still counts its
bytes. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import http.server
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

DAY = 86400
DEFAULT_TARGETS, WATCH_TARGETS = 20, 2
WATCH_BODY = 20_000
WATCH_INTERVAL = 300.0  # fake seconds
FAKE_START = "2026-12-08 00:00:00"


def body_sizes(count: int, seed: int = 5) -> list[int]:
    """Log-normal body sizes (median 60 KB, sigma 1.0) clipped to 20 KB-400 KB."""
    rng = random.Random(seed)
    return [min(400_000, max(20_000, int(rng.lognormvariate(math.log(60_000), 1.0))))
            for _ in range(count)]


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A static HTTP server for ``root`` on 127.0.0.1 in a thread (at real speed)."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a fetch cut at its timeout or body cap: the client's business


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def write_config(tmp: Path, port: int, daily: int) -> Path:
    pages = tmp / "pages"
    default = []
    for i, size in enumerate(body_sizes(DEFAULT_TARGETS)):
        (pages / f"d{i}").write_bytes(b"k" * size)
        default.append(f"http://127.0.0.1:{port}/d{i}")
    watch = []
    for i in range(WATCH_TARGETS):
        (pages / f"w{i}").write_bytes(b"w" * WATCH_BODY)
        watch.append(f"http://127.0.0.1:{port}/w{i}")
    config = tmp / "kzprobe.toml"
    urls = ", ".join(f'"{u}"' for u in default)
    config.write_text(f"""
[limits]
daily_bytes = {daily}
[analysis]
not_bogon = ["127.0.0.0/8"]
[output]
dir = "{tmp / 'out'}"
[service]
metrics_listen = ""
[targets]
urls = [{urls}]
[[targets.groups]]
name = "watch"
interval = {WATCH_INTERVAL}
urls = [{", ".join(f'"{u}"' for u in watch)}]
""")
    return config


def sweep_bytes(pages: Path) -> tuple[int, int]:
    """Bytes of one default sweep and one watch sweep (bodies + ~300 B of headers each)."""
    default = sum((pages / f"d{i}").stat().st_size + 300 for i in range(DEFAULT_TARGETS))
    watch = WATCH_TARGETS * (WATCH_BODY + 300)
    return default, watch


def day_usage(out: Path, day: str) -> dict[str, dict[str, int]]:
    """x_bytes (sent + received), records and sweeps per group for records of ``day``."""
    from kzprobe.storage.segments import iter_records, list_segments

    used: dict[str, dict[str, int]] = defaultdict(lambda: {"bytes": 0, "records": 0})
    sweeps: dict[str, set[str]] = defaultdict(set)
    for record in iter_records(list_segments([out])):
        if not str(record.get("measurement_start_time", "")).startswith(day):
            continue
        notes = record.get("annotations") or {}
        group = notes.get("kzprobe_group", "default")
        counted = record["test_keys"].get("x_bytes") or {}
        used[group]["bytes"] += counted.get("sent", 0) + counted.get("received", 0)
        used[group]["records"] += 1
        sweeps[group].add(notes.get("kzprobe_sweep", "?"))
    for group, ids in sweeps.items():
        used[group]["sweeps"] = len(ids)
    return dict(used)


def stop(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """Stop the daemon and wait for it to finish: ``faketime`` runs it as its child, so
    signal the whole session (a terminated ``faketime`` alone leaves the daemon running)."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap faketime, else its zombie keeps the group alive
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def timeline(out: Path, day: str) -> list[str]:
    """One line per default sweep begun on ``day``: its first record's start (fake UTC) and
    its bytes, those of records started after midnight apart (as ``day_usage`` splits them)."""
    from kzprobe.storage.segments import iter_records, list_segments

    starts: dict[str, str] = {}
    split: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # sweep -> [that day, after]
    for record in iter_records(list_segments([out])):
        notes = record.get("annotations") or {}
        if notes.get("kzprobe_group", "default") != "default":
            continue
        sweep, start = notes.get("kzprobe_sweep", "?"), str(record["measurement_start_time"])
        starts[sweep] = min(starts.get(sweep, start), start)
        counted = record["test_keys"].get("x_bytes") or {}
        split[sweep][0 if start.startswith(day) else 1] += (counted.get("sent", 0)
                                                             + counted.get("received", 0))
    lines = []
    for sweep, start in sorted(starts.items(), key=lambda item: item[1]):
        if start.startswith(day):
            today, after = split[sweep]
            lines.append(f"  {start[11:19]}  {today / 1e6:.3f} MB"
                         + (f" (+{after / 1e6:.3f} MB after midnight)" if after else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", type=float, default=300.0, help="fake seconds per second")
    parser.add_argument("--budget-sweeps", type=float, default=10.0,
                        help="default sweeps the budget leaves room for (24 would fit all)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (daemon log, records) and say where")
    args = parser.parse_args()
    if shutil.which("faketime") is None:
        raise SystemExit("needs libfaketime: apt-get install faketime")
    tmp = Path(tempfile.mkdtemp(prefix="kzprobe-budget-"))
    pages = tmp / "pages"
    pages.mkdir()
    server, port = serve(pages)
    try:
        config = write_config(tmp, port, 0)
        default_sweep, watch_sweep = sweep_bytes(pages)
        watch_day = watch_sweep * DAY / WATCH_INTERVAL
        daily = int(watch_day + args.budget_sweeps * default_sweep)
        config.write_text(config.read_text().replace("daily_bytes = 0", f"daily_bytes = {daily}"))
        real = DAY / args.speed + 30 / args.speed * 60  # the day, then half a fake hour past it
        env = {**os.environ, "FAKETIME_DONT_RESET": "1"}
        print(f"budget {daily / 1e6:.2f} MB: watch day {watch_day / 1e6:.2f} MB + "
              f"{args.budget_sweeps:g} default sweeps of {default_sweep / 1e6:.2f} MB; "
              f"unbudgeted day {(watch_day + 24 * default_sweep) / 1e6:.2f} MB; running "
              f"{real:.0f} s at {args.speed:g}x", flush=True)
        started = time.monotonic()
        with (tmp / "daemon.log").open("w") as log:
            proc = subprocess.Popen(
                ["faketime", "-f", f"@{FAKE_START} x{args.speed:g}", sys.executable, "-m",
                 "kzprobe", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True)
            try:
                proc.wait(timeout=real)
            except subprocess.TimeoutExpired:
                stop(proc)
        wall = time.monotonic() - started
        used = day_usage(tmp / "out", FAKE_START[:10])
        stretches = (tmp / "daemon.log").read_text().count('"bandwidth_budget_stretch"')
        total = sum(g["bytes"] for g in used.values())
        for group, figures in sorted(used.items()):
            print(f"{group}: {figures['sweeps']} sweeps, {figures['records']} records, "
                  f"{figures['bytes'] / 1e6:.2f} MB")
        print("default sweeps (start, MB):", *timeline(tmp / "out", FAKE_START[:10]), sep="\n")
        default = used.get("default", {"bytes": 0, "sweeps": 0})
        if default["sweeps"]:
            mean = default["bytes"] / default["sweeps"]
            room = daily - total + default["bytes"]
            print(f"default group: {default['sweeps']} sweeps of {room / mean:.1f} the budget "
                  f"had room for beside the watch group's use, at their mean "
                  f"{mean / 1e6:.3f} MB")
        print(f"used {total / 1e6:.2f} MB of {daily / 1e6:.2f} MB = {total / daily:.3f} of the "
              f"budget (target <= 1.05); {stretches} stretch decisions logged; "
              f"{wall:.0f} s real")
        print(f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)")
    finally:
        server.shutdown()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
