"""The alerting the daemon runs: records in, durable events and webhook POSTs out.

:meth:`Alerts.observe` (every written record; sync, cheap, never raises) feeds the
tracker, which holds a change it confirms as a draft. :meth:`Alerts.sweep_finished`
numbers the drafts of that group, appends them to the event log (fsync'd, off the loop),
saves ``alerts-state.json`` atomically and hands the events to each webhook's outbox, then
POSTs the heartbeat. Drafts of other groups are saved in the state file too, so a crash
between confirming and writing loses no change. At :meth:`Alerts.start`, a torn last line
of the log is cut, the state file is loaded, events written after it (seq above its
``seq``) are replayed, so a target blocked before a restart raises no second ``blocked``,
and each webhook's outbox is refilled from the log above its cursor
(``alerts-outbox.json``, saved after every delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from kzprobe.alerts import journal, store
from kzprobe.alerts.delivery import Deliverer, DeliveryStats, Outbox, post, webhook_id, where
from kzprobe.alerts.events import draft, number, settled, utc_iso
from kzprobe.alerts.formats import Body
from kzprobe.alerts.reading import AlertReading
from kzprobe.alerts.state import DEFAULT_GROUP, KINDS, Tracker, classify
from kzprobe.config.model import Config

log = structlog.get_logger("kzprobe.alerts")

FORGET_AFTER = 30 * 86400.0  # a target not measured for this long is forgotten
MAX_TARGETS = 200_000  # targets tracked; the least recently seen go first
MAX_DRAFTS = 100_000  # confirmed changes awaiting their sweep's end
MAX_REPLAY = 1_000_000  # events replayed at start (the state file was lost, say)
LOGGED_EVENTS = 20  # events of one batch logged one by one; the rest as a count
STATE_REFRESH = 300.0  # seconds: the state file is rewritten at least this often (last_seen)


@dataclass(frozen=True, slots=True)
class _Draft:
    group: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What :meth:`Alerts.start` reads off the loop."""

    state: dict[str, Any] | None
    replay: list[dict[str, Any]]
    cursors: dict[str, int]
    log_seq: int
    outbox: list[dict[str, Any]]


class Alerts:
    """Per-target state, the event log and the webhooks of one daemon."""

    def __init__(self, config: Config, *, probe_id: str | None) -> None:
        self.config = config.alerts
        self.directory = config.output.dir
        self.probe_id = probe_id
        self.tracker = Tracker(self.config.confirm)
        self.seq = 0
        self.stats = DeliveryStats()
        self.changes = dict.fromkeys(KINDS, 0)
        self.observe_errors = 0
        self.outboxes: list[Outbox] = []
        self._drafts: list[_Draft] = []
        self._saved: tuple[int, float] | None = None  # (tracker revision, time) last written
        self._published = -1  # the tracker revision the metrics' target states show
        self._lock = asyncio.Lock()  # one flush at a time: seq order is file order
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deliverers: list[Deliverer] = []
        self._heartbeats: dict[str, asyncio.Task[None]] = {}
        self._cursor_lock = asyncio.Lock()
        self._targets: tuple[tuple[str, str, str], ...] = ()

    @property
    def state_path(self) -> Path:
        return self.directory / store.STATE_FILE

    @property
    def outbox_path(self) -> Path:
        return self.directory / store.OUTBOX_FILE

    # -- start

    async def start(self) -> None:
        """Load the state, replay newer events, refill the outboxes, start delivering.
        Unreadable files are logged and alerting starts afresh: it never stops the daemon."""
        try:
            loaded = await asyncio.to_thread(self._read_files)
        except OSError as exc:
            log.error("alerts_state_unreadable", error=str(exc), directory=str(self.directory))
            loaded = _Loaded(None, [], {}, 0, [])
        saved_seq, drafts = store.load(loaded.state, self.tracker)
        self.seq = max(saved_seq, loaded.log_seq)
        replayed = set()
        for event in loaded.replay:
            obs = settled(event)
            if obs is not None:
                self.tracker.settle(obs.key, obs)
            replayed.add(_identity(event))
        restored = [_Draft(str(d.get("group") or DEFAULT_GROUP), d) for d in drafts
                    if _identity(d) not in replayed]
        self._drafts[:0] = restored  # before any observed while starting
        self._start_delivery(loaded)
        await self._save_cursors()
        if self._drafts:
            async with self._lock:
                await self._flush(self._take(None))
        self._publish()
        log.info("alerts_started", targets=len(self.tracker.entries), seq=self.seq,
                 replayed=len(loaded.replay), webhooks=len(self.outboxes),
                 pending=sum(len(o.pending) for o in self.outboxes))

    def _read_files(self) -> _Loaded:
        journal.recover(self.directory)
        state = journal.read_json(self.state_path)
        saved = state.get("seq") if state else None
        saved_seq = saved if isinstance(saved, int) else 0
        replay, _ = journal.read_after(self.directory, saved_seq, MAX_REPLAY)
        log_seq = journal.last_seq(self.directory)
        raw = journal.read_json(self.outbox_path) or {}
        cursors = {k: v for k, v in (raw.get("cursors") or {}).items() if isinstance(v, int)}
        ids = [webhook_id(w) for w in self.config.webhooks]
        lowest = min((cursors.get(i, log_seq) for i in ids), default=log_seq)
        outbox, dropped = journal.read_after(self.directory, lowest, self.config.max_pending)
        self.stats.dropped += dropped
        return _Loaded(state, replay, cursors, log_seq, outbox)

    def _start_delivery(self, loaded: _Loaded) -> None:
        if not self.config.webhooks and not self.config.heartbeat_url:
            return
        self._session = aiohttp.ClientSession(trust_env=False)
        for webhook in self.config.webhooks:
            cursor = loaded.cursors.get(webhook_id(webhook), loaded.log_seq)  # new: from now
            outbox = Outbox(webhook, cursor, self.config, self.stats)
            outbox.add(loaded.outbox)
            deliverer = Deliverer(outbox, self._session, self._save_cursors)
            self.outboxes.append(outbox)
            self._deliverers.append(deliverer)
            self._tasks.append(asyncio.create_task(deliverer.run(), name="kzprobe-alerts"))

    # -- records and sweeps

    def observe(self, record: Mapping[str, Any]) -> None:
        """Feed one written record to the tracker; a confirmed change waits for its sweep."""
        try:
            obs = classify(record)
            if obs is None:
                return
            change = self.tracker.observe(obs, time.time())
            if change is not None:
                self._drafts.append(_Draft(obs.group, draft(change, self.probe_id)))
                if len(self._drafts) > MAX_DRAFTS:
                    lost = self._drafts.pop(0)
                    log.error("alerts_draft_dropped", input=lost.event.get("input"))
        except Exception:
            self.observe_errors += 1
            log.exception("alerts_observe_failed")

    async def sweep_finished(self, group: str, sweep_id: str, *, records: int) -> None:
        """Write and send the changes confirmed in ``group``'s sweep; POST the heartbeat."""
        try:
            async with self._lock:
                await self._flush(self._take(group))
            self._publish()
            self._heartbeat(group, sweep_id, records)
        except Exception:
            log.exception("alerts_sweep_failed", group=group, sweep=sweep_id)

    async def emit(self, events: Sequence[Mapping[str, Any]], group: str = DEFAULT_GROUP) -> None:
        """Write and send events made elsewhere (issue 17's network events: ``input`` null,
        ``scope`` "network") through the same log, numbering and outboxes."""
        try:
            async with self._lock:
                await self._flush([_Draft(group, dict(event)) for event in events])
        except Exception:
            log.exception("alerts_emit_failed", events=len(events))

    def _take(self, group: str | None) -> list[_Draft]:
        """The drafts of ``group`` (None: all), removed from the waiting list."""
        taken: list[_Draft] = []
        kept: list[_Draft] = []
        for item in self._drafts:
            (taken if group is None or item.group == group else kept).append(item)
        self._drafts = kept
        return taken

    async def _flush(self, drafts: list[_Draft]) -> None:
        """Number, append (fsync'd), save the state, queue for delivery; on a write error
        the drafts wait for the next sweep."""
        now = time.time()
        events = [number(d.event, self.seq + i + 1) for i, d in enumerate(drafts)]
        self.tracker.forget(now - FORGET_AFTER, MAX_TARGETS)
        revision = self.tracker.revision
        snapshot = None
        if events or self._drafts or self._state_stale(revision, now):
            snapshot = store.dump(self.tracker, self.seq + len(events),
                                  [d.event | {"group": d.group} for d in self._drafts])
        try:
            if events:
                await asyncio.to_thread(journal.append, self.directory, events, now)
        except OSError as exc:
            self._drafts[:0] = drafts
            log.error("alerts_event_write_failed", error=str(exc), events=len(events))
            return
        self.seq += len(events)
        for event in events:
            kind = str(event.get("kind"))
            self.changes[kind] = self.changes.get(kind, 0) + 1
        for event in events[:LOGGED_EVENTS]:
            log.info("alert_event", kind=event.get("kind"), input=event.get("input"),
                     event_id=event["event_id"], summary=event.get("summary"))
        if len(events) > LOGGED_EVENTS:
            log.info("alert_events_more", count=len(events) - LOGGED_EVENTS,
                     last_event_id=events[-1]["event_id"])
        for outbox in self.outboxes:
            outbox.add(events)
        if snapshot is None:
            return
        try:
            await asyncio.to_thread(journal.write_json, self.state_path, snapshot)
            self._saved = (revision, now)
        except OSError as exc:
            log.error("alerts_state_write_failed", error=str(exc))

    def _state_stale(self, revision: int, now: float) -> bool:
        """Has the tracker changed since the state file was written (or has it aged)? A
        watch group's sweep every minute that changes nothing rewrites nothing: the file
        holds every target's state, 2,300 of them at default settings."""
        if self._saved is None:
            return True
        saved_revision, saved_at = self._saved
        return revision != saved_revision or now - saved_at >= STATE_REFRESH

    async def _save_cursors(self) -> None:
        async with self._cursor_lock:
            cursors = {o.id: o.cursor for o in self.outboxes}
            try:
                await asyncio.to_thread(journal.write_json, self.outbox_path,
                                        {"version": 1, "cursors": cursors})
            except OSError as exc:
                log.error("alerts_outbox_write_failed", error=str(exc))

    # -- heartbeat

    def _heartbeat(self, group: str, sweep_id: str, records: int) -> None:
        url = self.config.heartbeat_url
        if not url or self._session is None:
            return
        running = self._heartbeats.get(group)
        if running is not None and not running.done():
            self.stats.heartbeats_failed += 1
            log.warning("alert_heartbeat_skipped", group=group, reason="previous still running")
            return
        body = {"probe_id": self.probe_id, "group": group, "sweep_id": sweep_id,
                "finished_at": utc_iso(time.time()), "records": records}
        self._heartbeats[group] = asyncio.create_task(self._beat(url, body))

    async def _beat(self, url: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        data = Body(orjson.dumps(body), "application/json", f"heartbeat-{body['sweep_id']}")
        status, _ = await post(self._session, url, data, token=None, timeout=self.config.timeout)
        if status is not None and 200 <= status < 300:
            self.stats.heartbeats_ok += 1
        else:
            self.stats.heartbeats_failed += 1
            log.warning("alert_heartbeat_failed", url=where(url), status=status)

    # -- end

    async def aclose(self, timeout: float) -> None:
        """Write what waits, give deliveries up to ``timeout``; the rest stays in the outbox."""
        try:
            async with self._lock:
                await self._flush(self._take(None))
            waits = [asyncio.ensure_future(d.idle.wait()) for d in self._deliverers
                     if d.outbox.pending]
            if waits:
                await asyncio.wait(waits, timeout=max(0.0, timeout))
            tasks = [*self._tasks, *self._heartbeats.values(), *waits]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks, self._heartbeats = [], {}
            await self._save_cursors()
        except Exception:
            log.exception("alerts_close_failed")
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    # -- metrics

    def _publish(self) -> None:
        """The per-target states for the metrics, rebuilt only when the tracker changed."""
        if self._published != self.tracker.revision:
            self._targets = tuple(self.tracker.shown())
            self._published = self.tracker.revision

    def reading(self) -> AlertReading:
        """An immutable snapshot for the metrics thread (any thread may call this)."""
        stats = self.stats
        return AlertReading(
            targets=self._targets, changes=tuple(dict(self.changes).items()),
            delivered=stats.delivered, failed=stats.failed, dropped=stats.dropped,
            heartbeats_ok=stats.heartbeats_ok, heartbeats_failed=stats.heartbeats_failed,
            pending=sum(len(o.pending) for o in list(self.outboxes)))


def _identity(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a draft and its written event the same change."""
    return (event.get("input"), event.get("probe_asn"), event.get("kind"), event.get("at"))
