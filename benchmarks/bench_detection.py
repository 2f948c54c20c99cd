"""Detection latency: from the censor's rule going in (or out) to the webhook POST.

    .venv/bin/python benchmarks/bench_detection.py [--interval 10] [--runs 5] [--retries 2]
                                                   [--jitter 0.1] [--quick]

Builds the namespace lab (``tests/lab``; needs root, takes ``/tmp/kzprobe-lab.lock``) and
runs one real ``kzprobe run`` in the client namespace: the lab's control helper, a ``watch``
group with the HTTPS site ``tls-rst.lab.test`` swept every ``--interval`` seconds (jitter as
``[schedule]``), ``[analysis] retries = --retries``, ``[alerts] confirm = 2`` and a JSON
webhook on the client namespace's loopback (``tests/lab/webhook_receiver.py``, which stamps
each POST with the wall clock). Each run waits a random fraction of an interval (so the
rule meets the schedule at a random phase), inserts the router's SNI-reset rule
(``tls_rst``), times the ``blocked`` POST, waits again at random, removes the rule and times
the ``unblocked`` POST. Afterwards (untimed) the event log must hold exactly the
blocked/unblocked pairs, each ``tls.reset`` with the SNI confirmed.

Target (issue 16): median <= 2 intervals + the retry time. The retry time is what
``retries`` costs: a blocked target is measured 1 + retries times in a row, so it is
``retries / (1 + retries)`` of the median duration of a watch sweep that found the site
blocked (the daemon logs each sweep's duration). ``--quick``: interval 2 s, 2 runs.
Traffic stays inside the lab (198.18.0.0/15, loopback of the client namespace).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab import netns  # noqa: E402
from tests.lab.daemon import Watch, watching  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

LOCK = Path("/tmp/kzprobe-lab.lock")
SCENARIO, SITE = "tls_rst", "tls_rst"
CONFIRM = 2


@dataclass(slots=True)
class Figures:
    blocked: list[float] = field(default_factory=list)
    unblocked: list[float] = field(default_factory=list)


def lab_lock(timeout: float = 3600.0) -> int:
    """Hold the lab lock (the lab's namespace names are fixed per process, its tests share
    the machine); wait for it up to ``timeout`` seconds."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{LOCK} still held after {timeout:.0f}s") from None
            time.sleep(1.0)


def wait_kind(watch: Watch, kind: str, after: int, timeout: float) -> float:
    """Wall-clock receive time of the first ``kind`` POST from index ``after`` on."""
    post = watch.wait_post(lambda p: p["body"].get("kind") == kind, timeout, after)
    return float(post["t"])


def one_run(lab: Lab, watch: Watch, interval: float, timeout: float) -> tuple[float, float]:
    """(rule in -> blocked POST, rule out -> unblocked POST), seconds."""
    time.sleep(random.uniform(0, interval))
    seen = len(watch.posts())
    inserted = time.time()
    with lab.scenario(SCENARIO):
        blocked = wait_kind(watch, "blocked", seen, timeout) - inserted
        time.sleep(random.uniform(0, interval))
        seen = len(watch.posts())
        removed = time.time()  # the rule goes when the block ends, right after this
    unblocked = wait_kind(watch, "unblocked", seen, timeout) - removed
    return blocked, unblocked


def retry_seconds(watch: Watch, retries: int) -> tuple[float, float, float]:
    """(retry time, median blocked-sweep duration, median ok-sweep duration), seconds."""
    sweeps = watch.log("sweep_finished")
    blocked = [float(s["duration_s"]) for s in sweeps if s.get("anomalies")]
    ok = [float(s["duration_s"]) for s in sweeps if not s.get("anomalies")]
    blocked_median = statistics.median(blocked) if blocked else 0.0
    ok_median = statistics.median(ok) if ok else 0.0
    return blocked_median * retries / (1 + retries), blocked_median, ok_median


def post_lags(watch: Watch) -> list[float]:
    """Seconds from the confirming sweep's ``sweep_finished`` log line to each POST: what
    the alerting itself adds (flush, fsync'd event append, the POST)."""
    finished = {s["sweep"]: datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00"))
                for s in watch.log("sweep_finished")}
    lags = []
    for post in watch.posts():
        evidence = post["body"].get("evidence") or [{}]
        end = finished.get(evidence[-1].get("sweep"))
        if end is not None:
            lags.append(float(post["t"]) - end.timestamp())
    return lags


def attempts_of_blocked(watch: Watch) -> list[int]:
    """``x_attempts`` of every record that found the site blocked (retries really ran)."""
    found = []
    for path in sorted(watch.out_dir.glob("kzprobe-*.ndjson")):
        for line in path.read_text().splitlines():
            keys = json.loads(line).get("test_keys") or {}
            if keys.get("interference"):
                found.append(int(keys.get("x_attempts") or 0))
    return found


def check_events(watch: Watch, runs: int, retries: int) -> str:
    """The event log holds exactly ``runs`` blocked/unblocked pairs, tls.reset, SNI confirmed;
    every blocked record was measured 1 + retries times."""
    events = watch.events()
    kinds = [e["kind"] for e in events]
    problems = []
    attempts = attempts_of_blocked(watch)
    if not attempts or set(attempts) != {1 + retries}:
        problems.append(f"attempts of blocked records {sorted(set(attempts))}")
    if kinds != ["blocked", "unblocked"] * runs:
        problems.append(f"kinds {kinds}")
    for event in events:
        if event["kind"] == "blocked" and (event["to"]["interference"] != ["tls.reset"]
                                           or event["sni_blocking_confirmed"] is not True):
            problems.append(f"blocked event {event['to']} sni={event['sni_blocking_confirmed']}")
    posted = [p["body"].get("event_id") for p in watch.posts()]
    if posted != [e["event_id"] for e in events]:
        problems.append(f"POSTs {posted} != events")
    return "; ".join(problems) or (f"ok ({len(events)} events, each POSTed once; "
                                   f"{len(attempts)} blocked records, {1 + retries} attempts each)")


def spread(values: Sequence[float]) -> str:
    return (f"median {statistics.median(values):.1f} s (min {min(values):.1f}, "
            f"max {max(values):.1f}; runs: {' '.join(f'{v:.1f}' for v in values)})")


def measure(lab: Lab, args: argparse.Namespace) -> int:
    interval, runs = args.interval, args.runs
    timeout = interval * (1 + args.jitter) * 4 + 60
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="kzprobe-bench-detect-") as tmp:
        with watching(lab, Path(tmp), lab.url(SITE), interval=interval, confirm=CONFIRM,
                      retries=args.retries, jitter=args.jitter) as watch:
            watch.wait_sweeps(CONFIRM + 1, timeout)  # ok, confirmed: a first state is no news
            for run in range(runs):
                blocked, unblocked = one_run(lab, watch, interval, timeout)
                figures.blocked.append(blocked)
                figures.unblocked.append(unblocked)
                print(f"run {run + 1}/{runs}: blocked POST after {blocked:.1f} s, "
                      f"unblocked POST after {unblocked:.1f} s", flush=True)
        # the daemon has stopped: its segments are closed
        retry, blocked_sweep, ok_sweep = retry_seconds(watch, args.retries)
        check = check_events(watch, runs, args.retries)
        lags = post_lags(watch)
    target = 2 * interval + retry
    print(f"sweep duration: blocked {blocked_sweep:.2f} s ({1 + args.retries} attempts), "
          f"ok {ok_sweep:.2f} s; retry time {retry:.2f} s")
    print(f"events: {check}")
    if lags:
        print(f"POST after its confirming sweep finished: median "
              f"{statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
              f"({len(lags)} POSTs)")
    print(f"blocked:   {spread(figures.blocked)}")
    print(f"unblocked: {spread(figures.unblocked)}")
    met = max(statistics.median(figures.blocked), statistics.median(figures.unblocked)) <= target
    print(f"detection latency (interval {interval:g} s, jitter {args.jitter:g}, retries "
          f"{args.retries}, confirm {CONFIRM}, {runs} runs): blocked median "
          f"{statistics.median(figures.blocked):.1f} s, unblocked median "
          f"{statistics.median(figures.unblocked):.1f} s; target <= {target:.1f} s "
          f"(2 intervals + retry time): {'met' if met else 'NOT met'}")
    return 0 if met and check.startswith("ok") else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=10.0, help="watch group interval, s")
    parser.add_argument("--runs", type=int, default=5, help="block/unblock cycles")
    parser.add_argument("--retries", type=int, default=2, help="[analysis] retries")
    parser.add_argument("--jitter", type=float, default=0.1, help="[schedule] jitter")
    parser.add_argument("--quick", action="store_true", help="interval 2 s, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.interval, args.runs = 2.0, 2
    reason = netns.can_create_namespaces()
    if reason is not None:
        raise SystemExit(f"the namespace lab cannot run here: {reason}")
    lock = lab_lock()
    try:
        netns.cleanup_stale()
        lab = Lab.up()
        try:
            return measure(lab, args)
        finally:
            problems = lab.close()
            if problems:
                print("lab teardown: " + "; ".join(problems), file=sys.stderr)
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
