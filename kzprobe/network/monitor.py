"""The :class:`NetworkMonitor`: measures the anchors every ``[network] interval`` and on
demand, keeps the confirmed network state, and tells the daemon when it changes.

Anchors are measured with the engine's own ``measure`` (a finished record, not emitted), so
an anchor is measured exactly as a target is, and its record can be written like any other
(``annotations.kzprobe_group = "anchors"``, ``annotations.kzprobe_network_check``). The
control helper is checked with a plain GET (its hello): any HTTP answer means reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from kzprobe.config.model import RESOLVERS_ANCHOR, Config
from kzprobe.errors import classify
from kzprobe.network.checks import anchor_check, resolvers_check
from kzprobe.network.flag import explained, flag_record
from kzprobe.network.state import (
    OUTAGES,
    AnchorCheck,
    CheckRound,
    NetworkStateMachine,
    Scope,
    Transition,
)
from kzprobe.targets import Target, parse_target

log = structlog.get_logger("kzprobe.network")

Measure = Callable[[Target], Awaitable[dict[str, Any]]]
HelperCheck = Callable[[], Awaitable[str | None]]  # None: the helper answered; else why not
OnRecord = Callable[[dict[str, Any]], Awaitable[None]]
OnTransition = Callable[[Transition], Awaitable[None]]
ANCHORS_GROUP = "anchors"
HELPER_ANCHOR = "control helper"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSnapshot:
    """The confirmed state at one moment: what records are stamped with, what metrics show."""

    state: str
    check_id: str | None  # the anchor round that decided it
    since: float | None  # when the state began (None: since start)
    pending: str | None  # a change seen and not yet confirmed
    last_check: float | None  # when the last round ended
    outage_rate: float = 1.0

    @property
    def outage(self) -> bool:
        return self.state in OUTAGES

    @property
    def rate_factor(self) -> float:
        """The fraction of the normal sweep rate to use now (``[network] outage_rate``)."""
        return self.outage_rate if self.outage else 1.0


class HelperProbe:
    """Is any control helper reachable? A GET on its URL; any HTTP status counts (a 401 or
    503 still proves the path). No token is sent. Verified with ``ssl_context`` (the probe's
    trust store), so an interception box answering for a blocked helper does not count."""

    def __init__(self, urls: Sequence[str], *, timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.urls = tuple(urls)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self) -> str | None:
        failure: str | None = None
        for url in self.urls:
            failure = await self._get(url)
            if failure is None:
                return None
        return failure

    async def _get(self, url: str) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "kzprobe"}, connector=aiohttp.TCPConnector(limit=8))
        try:
            async with asyncio.timeout(self.timeout), self._session.get(
                    url, allow_redirects=False, ssl=self._ssl) as response:
                await response.content.read(4096)  # bounded; the answer itself is not used
        except Exception as exc:
            return classify(exc)
        return None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def anchor_targets(config: Config) -> list[tuple[str, Scope, Target]]:
    """The measurable anchors (``resolvers`` is judged from their lookups instead)."""
    return [(a.target, a.scope, parse_target(a.target, origin="[network] anchors"))
            for a in config.network.anchors if a.target != RESOLVERS_ANCHOR]


def resolvers_scope(config: Config) -> Scope:
    """The ``resolvers`` entry's scope; unlisted, the resolvers are the ISP's: domestic."""
    listed = [a.scope for a in config.network.anchors if a.target == RESOLVERS_ANCHOR]
    return listed[0] if listed else "domestic"


class NetworkMonitor:
    """Anchor checks, every interval and on demand, and the confirmed network state."""

    def __init__(self, config: Config, measure: Measure, *, helper: HelperCheck | None = None,
                 on_record: OnRecord | None = None, on_transition: OnTransition | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.measure = measure
        self.helper = helper
        self.on_record = on_record
        self.on_transition = on_transition
        self.clock = clock
        self.anchors = anchor_targets(config)
        self.machine = NetworkStateMachine(config.network)
        self.transitions: list[Transition] = []  # every confirmed change, in order (bounded)
        self._scope = resolvers_scope(config)
        self._round: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_check: float | None = None
        # The last outage that ended: its state, its last check, when online was first seen.
        self._ended: tuple[str, str | None, float] | None = None
        timeouts = config.timeouts
        self._bound = timeouts.measurement * (1 + config.analysis.retries) + timeouts.control

    @property
    def enabled(self) -> bool:
        """False without anchors: the state stays ``online`` and nothing is measured."""
        return bool(self.anchors)

    @property
    def state(self) -> str:
        return self.machine.state

    @property
    def check_id(self) -> str | None:
        return self.machine.check_id

    def snapshot(self) -> NetworkSnapshot:
        m = self.machine
        return NetworkSnapshot(state=m.state, check_id=m.check_id, since=m.since,
                               pending=m.candidate, last_check=self._last_check,
                               outage_rate=self.config.network.outage_rate)

    def flag(self, record: dict[str, Any]) -> dict[str, Any]:
        """Stamp a finished record with the current state (:func:`flag_record`); a failure
        an outage explains while it waits for confirmation, or one that began before the
        way back was first seen, is judged by that outage: otherwise the failures at both
        edges of a DNS outage (the control still works) would be two "blocked" sightings."""
        state, check = self.machine.state, self.machine.check_id
        edge = self._edge_outage(record)
        if edge is not None and explained(record, edge[0]):
            state, check = edge
        return flag_record(record, state, check)

    def _edge_outage(self, record: dict[str, Any]) -> tuple[str, str | None] | None:
        """(state, check) of an outage pending now or ended while ``record`` was measured."""
        machine = self.machine
        if machine.state in OUTAGES:
            return None
        if machine.candidate in OUTAGES:
            return machine.candidate, machine.candidate_check
        runtime = record.get("test_runtime")
        ended = self._ended
        if ended is None or not isinstance(runtime, int | float):
            return None
        return (ended[0], ended[1]) if self.clock() - runtime < ended[2] else None

    async def check_now(self, *, settle: bool = True) -> NetworkSnapshot:
        """Check the anchors now (joining a round already running). ``settle``: while a
        change waits for confirmation, check again every ``recheck`` seconds until it is
        confirmed or rejected, so a sweep starts in a decided state."""
        if not self.enabled:
            return self.snapshot()
        await self._one_round()
        limit = max(self.config.network.confirm, self.config.network.recover)
        for _ in range(limit):
            if not (settle and self.machine.pending) or self._stopping.is_set():
                break
            await self._sleep(self.config.network.recheck)
            await self._one_round()
        return self.snapshot()

    async def run(self) -> None:
        """Check every interval (every ``recheck`` while a change is pending) until
        :meth:`stop`. Failures are data: a round never raises."""
        while self.enabled and not self._stopping.is_set():
            await self.check_now(settle=False)
            network = self.config.network
            await self._sleep(network.recheck if self.machine.pending else network.interval)

    def stop(self) -> None:
        """End the checks: a round under way is cancelled (the engine closes next)."""
        self._stopping.set()
        self._changed.set()
        if self._round is not None:
            self._round.cancel()

    async def wait_change(self, timeout: float | None = None) -> NetworkSnapshot | None:
        """The snapshot after the next confirmed change; None on timeout or stop."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
                return None if self._stopping.is_set() else self.snapshot()
        return None

    async def wait_online(self, timeout: float | None = None) -> bool:
        """Wait until the state is not an outage; False on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.machine.state in OUTAGES:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or self._stopping.is_set():
                return False
            await self.wait_change(left)
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _one_round(self) -> None:
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._check_round())
        await asyncio.shield(self._round)

    async def _check_round(self) -> None:
        check_id, at = uuid.uuid4().hex[:16], self.clock()
        helper = asyncio.create_task(self._helper_checks())  # alongside, not after
        try:
            measured = await asyncio.gather(*(self._measure(t) for _, _, t in self.anchors))
        except BaseException:
            helper.cancel()
            raise
        checks = [self._check(name, scope, got) for (name, scope, _), got
                  in zip(self.anchors, measured, strict=True)]
        records = [got for got in measured if isinstance(got, dict)]
        resolvers = resolvers_check(records, self._scope)
        checks += [resolvers] if resolvers is not None else []
        checks += await helper
        round_ = CheckRound(check_id=check_id, at=at, checks=tuple(checks), ended=self.clock())
        self._last_check = round_.ended
        previous = self.machine.state, self.machine.check_id
        change = self.machine.observe(round_)
        if change is not None and previous[0] in OUTAGES and change.to_state not in OUTAGES:
            self._ended = (previous[0], previous[1], change.at)
        log.debug("network_checked", check=check_id, raw=self.machine.last_raw,
                  state=self.machine.state)
        await self._emit(records, check_id)
        if change is not None:
            await self._announce(change)

    async def _measure(self, target: Target) -> dict[str, Any] | str:
        """The anchor's record, or the failure string of a measurement that raised."""
        try:
            async with asyncio.timeout(self._bound):
                return await self.measure(target)
        except Exception as exc:  # failures are data: a crashed check is a failed anchor
            return classify(exc)

    @staticmethod
    def _check(name: str, scope: Scope, got: dict[str, Any] | str) -> AnchorCheck:
        if isinstance(got, str):
            return AnchorCheck(anchor=name, scope=scope, failure=got)
        return anchor_check(name, scope, got)

    async def _helper_checks(self) -> list[AnchorCheck]:
        if self.helper is None:
            return []
        try:
            async with asyncio.timeout(self.config.timeouts.control):
                failure = await self.helper()
        except Exception as exc:
            failure = classify(exc)
        return [AnchorCheck(anchor=HELPER_ANCHOR, scope="international", failure=failure,
                            kind="helper")]

    async def _emit(self, records: list[dict[str, Any]], check_id: str) -> None:
        if self.on_record is None:
            return
        for record in records:
            annotations = record.setdefault("annotations", {})
            annotations["kzprobe_group"] = ANCHORS_GROUP
            annotations["kzprobe_network_check"] = check_id
            await self.on_record(self.flag(record))

    async def _announce(self, change: Transition) -> None:
        log.info("network_state_changed", kind=change.kind, state=change.to_state,
                 previous=change.from_state, check=change.check_id)
        self.transitions = [*self.transitions[-99:], change]
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self.on_transition is not None:
            await self.on_transition(change)
