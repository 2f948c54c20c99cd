"""What ``kzprobe demo`` prints: per target what was simulated and what was measured, the
sweep in the cut and what changed after it, the event log, the webhook's POSTs and where the
files are.

Values are written as in the records (:mod:`kzprobe.cli.pretty`, which ``measure --format
pretty`` uses too), so what the summary says can be found in the NDJSON as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from kzprobe.alerts import journal
from kzprobe.cli.pretty import observed as observed  # demo_run uses it from here
from kzprobe.cli.pretty import plural
from kzprobe.demo import DemoTarget
from kzprobe.simnet.receiver import Post

MAX_EVENTS_SHOWN = 50

Sweep = dict[str, dict[str, Any]]  # input -> the record


def _verdict(record: dict[str, Any]) -> tuple[Any, tuple[str, ...]]:
    keys = record.get("test_keys") or {}
    return keys.get("blocking"), tuple(keys.get("interference") or ())


def _states(sweep: Sweep) -> str:
    states = sorted({str(r.get("x_network_state")) for r in sweep.values()})
    return ", ".join(states) or "none"


def show_first(out: TextIO, targets: Sequence[DemoTarget], sweeps: Sequence[Sweep]) -> None:
    """Sweep 1: every target, what the network does to it and what kzprobe measured."""
    first = sweeps[0] if sweeps else {}
    width = max(len(t.url) for t in targets)
    out.write("\nkzprobe demo: the daemon (`kzprobe run`) on a simulated censored network "
              f"(loopback)\n\nSweep 1, every target (network state: {_states(first)}):\n")
    for target in targets:
        record = first.get(target.url)
        seen = observed(record["test_keys"]) if record else "no record"
        out.write(f"  {target.url:<{width}}  [{target.category_code}]\n")
        out.write(f"      simulated: {target.what_happens}\n      measured:  {seen}\n")


def show_later(out: TextIO, sweeps: Sequence[Sweep], switched: str) -> None:
    """Sweeps 2 and 3: the one in the cut (set aside) and the full one after the recovery
    (what differs from sweep 1)."""
    out.write(f"\nThen the ISP starts answering NXDOMAIN for {switched}, and the international "
              "link is cut: the sites,\nthe SNI filters on the path to them and the control "
              "helper refuse connections. The demo asks for a sweep.\n")
    if len(sweeps) < 3:
        out.write(f"  only {len(sweeps)} of the 3 sweeps were recorded\n")
        return
    first, cut, after = sweeps[0], sweeps[1], sweeps[2]
    flagged = [r for r in cut.values() if r.get("x_outage") is True]
    kept = [f"{url} {', '.join(_verdict(r)[1])}" for url, r in cut.items()
            if r.get("x_outage") is not True and _verdict(r)[1]]
    out.write(f"\nSweep 2, in the cut (network state: {_states(cut)}): {len(flagged)} of "
              f"{len(cut)} records say x_outage: true\n  (the outage explains their failure: "
              "no verdict and no alarm from them)\n")
    if kept:
        out.write(f"  still reported, as no outage produces it: {'; '.join(kept)}\n")
    bare = [url for url, r in cut.items() if r.get("x_outage") is not True
            and not _verdict(r)[1] and _verdict(r)[0] is None]
    if bare:
        out.write(f"  no verdict (the control helper is abroad, nothing self-proving): "
                  f"{'; '.join(bare)}\n")
    changed = [url for url, r in after.items()
               if url not in first or _verdict(first[url]) != _verdict(r)]
    out.write(f"\nThe link is back. Sweep 3, every target at once after the recovery (network "
              f"state: {_states(after)}):\n")
    for url in changed:
        out.write(f"  {url}  {observed(after[url]['test_keys'])}\n")
    out.write(f"  the other {len(after) - len(changed)} targets: as in sweep 1\n")


@dataclass(frozen=True, slots=True)
class Shown:
    """What the end of the summary needs from the runs."""

    records: int
    anchors: int
    posts: Sequence[Post]


def _events(out: TextIO, output: Path) -> None:
    events, _ = journal.read_after(output, 0, MAX_EVENTS_SHOWN)
    names = ", ".join(p.name for p in journal.event_files(output)) or "no event log"
    out.write(f"\nEvents ({names}; the demo confirms a change in one sweep, deployments in "
              "two):\n")
    for event in events:
        out.write(f"  {event.get('kind', '?'):<10} {event.get('summary')}\n")
    if not events:
        out.write("  none\n")


def _post_kind(post: Post) -> str:
    try:
        body = orjson.loads(post.body)
    except orjson.JSONDecodeError:
        return "not JSON"
    kind = str(body.get("kind")) if isinstance(body, dict) else "?"
    return f"{kind} ({body.get('count')} events)" if kind == "grouped" else kind


async def show_the_rest(shown: Shown, output: Path, out: TextIO, *, removed: int) -> None:
    """The event log, the webhook's POSTs, the files and the HTML report."""
    await asyncio.to_thread(_events, out, output)
    kinds = ", ".join(_post_kind(p) for p in shown.posts) or "nothing"
    posts = plural(len(shown.posts), "POST")
    out.write(f"The demo's webhook received {posts} (format json): {kinds}\n")
    fresh = " (a previous demo's files were removed first)" if removed else ""
    out.write(f"\n{shown.records} records ({shown.anchors} of them the anchors' checks) "
              f"written as NDJSON under {output}/{fresh}\n")
    html = output / "report.html"
    await asyncio.to_thread(_write_report, output, html)
    out.write(f"HTML report: {html}  (and: kzprobe report {output})\n")


def _write_report(segments: Path, html: Path) -> None:
    """The runs through `kzprobe report`, as a self-contained HTML file."""
    from kzprobe.report import command

    request = command.request_from([segments], since=None, until=None, fmt="html",
                                   table=None, export_parquet=None, memory_limit="256MB")
    command.write_output(command.run(request), html)
