"""What a webhook receives, per ``format``. A message is one event, or a group of events of
one sweep and network (then ``kind`` is ``grouped``: the count, the first ``group_first``
events and every event id).

- ``json``: the event itself (SPEC16), or the grouped object; ``application/json``.
- ``slack``: ``{"text": ...}`` (Slack incoming webhooks, Mattermost, Rocket.Chat).
- ``matrix``: ``{"msgtype": "m.text", "body": ...}``, an ``m.room.message`` content: POSTed
  to a webhook bridge, or PUT straight to a homeserver when the URL is
  ``.../_matrix/client/v3/rooms/<room id>/send/m.room.message`` (the token is then the
  bot's access token, the idempotency key its transaction id).
- ``text``: the same words as ``text/plain; charset=utf-8`` (ntfy, Gotify, a mail relay).

The readable formats are link-free: inputs are defanged (``https[:]//twitter[.]com/``) so
chat clients neither fetch nor preview the blocked site, and they end with the event ids
and the measurement uids of the evidence. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kzprobe.alerts.events import EVENT_VERSION, sweep_of

Event = Mapping[str, Any]
MAX_TEXT_CHARS = 30_000  # Slack cuts a text at 40,000 characters; Matrix events are <= 64 KiB


@dataclass(frozen=True, slots=True)
class Body:
    """One POST: its bytes, content type and the idempotency key sent as a header."""

    data: bytes
    content_type: str
    key: str


def defang(text: str) -> str:
    """``https://twitter.com/`` -> ``https[:]//twitter[.]com/``: no client makes it a link."""
    return text.replace("://", "[:]//").replace(".", "[.]")


def message_key(events: Sequence[Event]) -> str:
    """The idempotency key: the event id, or for a group its first id and count."""
    first = str(events[0].get("event_id"))
    return first if len(events) == 1 else f"group-{first}-{len(events)}"


def grouped(events: Sequence[Event], first: int) -> dict[str, Any]:
    """The ``json`` form of several events of one sweep and network."""
    kinds = Counter(str(e.get("kind")) for e in events)
    head = events[0]
    return {
        "event_version": EVENT_VERSION, "kind": "grouped", "event_id": message_key(events),
        "count": len(events), "kinds": dict(sorted(kinds.items())), "sweep": sweep_of(head),
        "probe_cc": head.get("probe_cc"), "probe_asn": head.get("probe_asn"),
        "probe_id": head.get("probe_id"), "summary": _group_line(events, kinds),
        "events": [dict(e) for e in events[:first]],
        "event_ids": [e.get("event_id") for e in events],
    }


def _group_line(events: Sequence[Event], kinds: Counter[str]) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    head = events[0]
    return (f"{len(events)} targets changed on {head.get('probe_asn')} in one sweep "
            f"({counts})")


def _event_line(event: Event) -> str:
    text = str(event.get("summary") or "")
    target = event.get("input")
    return text.replace(target, defang(target), 1) if isinstance(target, str) else text


def _evidence_ids(event: Event) -> str:
    evidence = event.get("evidence")
    uids = [str(e.get("measurement_uid")) for e in evidence or () if isinstance(e, Mapping)]
    return ", ".join(uids) or "none"


def readable(events: Sequence[Event], first: int) -> str:
    """The text of a message for people: summary, evidence and ids; bounded."""
    if len(events) == 1:
        event = events[0]
        lines = [f"kzprobe {event.get('probe_id')}: {_event_line(event)}",
                 f"evidence: {_evidence_ids(event)}", f"event: {event.get('event_id')}"]
    else:
        kinds = Counter(str(e.get("kind")) for e in events)
        lines = [f"kzprobe {events[0].get('probe_id')}: {_group_line(events, kinds)}"]
        lines += [f"- {_event_line(e)}" for e in events[:first]]
        if len(events) > first:
            lines.append(f"... and {len(events) - first} more")
        lines.append("events: " + " ".join(str(e.get("event_id")) for e in events))
    text = "\n".join(lines)
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 1] + "…"


def render(events: Sequence[Event], fmt: str, first: int) -> Body:
    """The POST body of a message in webhook format ``fmt``."""
    key = message_key(events)
    if fmt == "json":
        value = events[0] if len(events) == 1 else grouped(events, first)
        return Body(orjson.dumps(value), "application/json", key)
    text = readable(events, first)
    if fmt == "slack":
        return Body(orjson.dumps({"text": text}), "application/json", key)
    if fmt == "matrix":
        return Body(orjson.dumps({"msgtype": "m.text", "body": text}), "application/json", key)
    return Body(text.encode(), "text/plain; charset=utf-8", key)
