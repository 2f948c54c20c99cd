"""Shape the router's links with ``tc ... tbf``: a slow, paced path, as real ones are.

Inside the lab every link is a veth, so a few-KB message crosses in one piece and a
reader that treats one ``recv()`` as the whole message passes. A token bucket on the
router's two veth ends (toward the client and toward the internet) sends MTU-sized
packets at ``rate`` (GSO packets are cut to segments by tbf), so messages arrive as
several segments spread over time. tbf is used because this kernel has no netem.
:func:`shaped` installs it on both directions, checks it is there, yields a reader of
its counters (so a test can prove packets were held back), and removes it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .netns import LabError, run

if TYPE_CHECKING:
    from .lab import Lab

_STATS = re.compile(r"qdisc tbf .*?\n\s*Sent (\d+) bytes (\d+) pkt \(dropped (\d+), "
                    r"overlimits (\d+)", re.S)


@dataclass(frozen=True, slots=True)
class TbfStats:
    """One tbf qdisc's counters (``tc -s qdisc show``)."""

    sent_bytes: int
    packets: int
    dropped: int
    overlimits: int  # times a packet had to wait for tokens: the shaping at work


def devices(lab: Lab) -> tuple[str, str]:
    """The router's veth ends: toward the client (downloads), toward the internet (uploads)."""
    return lab.names.veth("rc"), lab.names.veth("ri")


def stats(lab: Lab) -> dict[str, TbfStats]:
    """Counters of the tbf qdisc on each shaped device (missing device: not shaped)."""
    found = {}
    for dev in devices(lab):
        out = run(["tc", "-s", "qdisc", "show", "dev", dev], ns=lab.names.router).stdout
        match = _STATS.search(out)
        if match:
            found[dev] = TbfStats(*(int(g) for g in match.groups()))
    return found


@contextlib.contextmanager
def shaped(lab: Lab, *, rate: str = "8mbit", burst: str = "1600",
           latency: str = "200ms") -> Iterator[Callable[[], dict[str, TbfStats]]]:
    """Both directions through the router at ``rate``; yields :func:`stats` for ``lab``."""
    ns = lab.names.router
    try:
        for dev in devices(lab):
            run(["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", burst, "latency", latency], ns=ns)
        missing = set(devices(lab)) - set(stats(lab))
        if missing:
            raise LabError(f"tbf qdisc missing on {sorted(missing)} after install")
        yield lambda: stats(lab)
    finally:
        for dev in devices(lab):
            run(["tc", "qdisc", "del", "dev", dev, "root"], ns=ns, check=False)
        left = stats(lab)
        if left:
            raise LabError(f"tbf qdisc left on the router: {sorted(left)}")
