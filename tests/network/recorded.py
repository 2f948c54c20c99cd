"""Anchor check results as a round records them: builders for the pure state-machine tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from kzprobe.config.model import NetworkConfig
from kzprobe.network.state import AnchorCheck, CheckRound, NetworkStateMachine, Transition

TIMEOUT = "generic_timeout_error"
DOM = ("tls://kaspi.kz:443", "tcp://195.210.46.195:53")
INTL = ("tcp://1.1.1.1:443", "tls://www.gstatic.com:443")
_ids = itertools.count()


def anchors(*, dom: bool = True, intl: bool = True, helper: bool = True,
            resolvers: bool = True, seconds: float = 0.05, slow: float | None = None,
            down: Iterable[str] = ()) -> tuple[AnchorCheck, ...]:
    """One round's checks: two domestic and two international anchors, the resolvers and
    the helper; ``down`` names single anchors that failed, ``slow`` sets every time."""
    lost = set(down)
    checks = []
    for name, up, scope in [*((n, dom, "domestic") for n in DOM),
                            *((n, intl, "international") for n in INTL)]:
        ok = up and name not in lost
        named = not name.split("//")[1][0].isdigit()
        checks.append(AnchorCheck(
            anchor=name, scope=scope, failure=None if ok else TIMEOUT,  # type: ignore[arg-type]
            dns_failed=named and not resolvers and not ok,
            seconds=(slow or seconds) if ok else None))
    checks.append(AnchorCheck(anchor="resolvers", scope="domestic", kind="resolvers",
                              failure=None if resolvers else TIMEOUT))
    checks.append(AnchorCheck(anchor="control helper", scope="international", kind="helper",
                              failure=None if helper else TIMEOUT))
    return tuple(checks)


def named_dns_down() -> tuple[AnchorCheck, ...]:
    """Resolvers dead: named anchors fail at their lookup, anchors by address work."""
    checks = []
    for c in anchors():
        named = c.kind == "anchor" and not c.anchor.split("//")[1][0].isdigit()
        if named or c.kind == "resolvers":
            c = AnchorCheck(anchor=c.anchor, scope=c.scope, kind=c.kind, failure=TIMEOUT,
                            dns_failed=named)
        checks.append(c)
    return tuple(checks)


def rounds(*shapes: tuple[AnchorCheck, ...], start: float = 1_000_000.0,
           step: float = 1.0) -> list[CheckRound]:
    """Rounds ``step`` seconds apart (windows of hours compressed to seconds)."""
    return [CheckRound(check_id=f"c{next(_ids)}", at=start + i * step, checks=shape,
                       ended=start + i * step + 0.5) for i, shape in enumerate(shapes)]


def run(shapes: Iterable[tuple[AnchorCheck, ...]], config: NetworkConfig | None = None
        ) -> tuple[NetworkStateMachine, list[Transition]]:
    """Feed the rounds to a fresh machine; return it and every confirmed change."""
    machine = NetworkStateMachine(config or NetworkConfig())
    changes = [c for r in rounds(*shapes) if (c := machine.observe(r)) is not None]
    return machine, changes
