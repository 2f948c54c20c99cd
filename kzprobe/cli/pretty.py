"""Records as people read them: ``measure --format pretty`` and the demo's lines.

Values are written as in the records (JSON: ``true``, ``false``, ``null``, double-quoted
strings), so what the text says can be found in the NDJSON as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from kzprobe.alerts.state import classify
from kzprobe.text import plural
from kzprobe.verdict.analysis.observations import web_title
from kzprobe.verdict.analysis.records import body_bytes

# (test_keys list, label): the steps whose first entry's duration a block shows
_STEPS = (("queries", "dns"), ("tcp_connect", "connect"), ("tls_handshakes", "tls"),
          ("requests", "http"))


def as_json(value: Any) -> str:
    """``true``, ``null``, ``"Demo News"``: a value as the records spell it."""
    return orjson.dumps(value).decode()


def _http_line(response: Mapping[str, Any]) -> str:
    code = response["code"]
    if not response.get("body") and response.get("x_body_length"):
        return f"HTTP {code} (body not stored)"
    title = web_title(body_bytes(response.get("body")))  # the title title_match compares
    return f"HTTP {code} {as_json(title)}" if title else f"HTTP {code} (no title)"


def _h3_note(requests: list[Mapping[str, Any]]) -> str:
    """``; HTTP/3 200`` when the page was fetched over QUIC too (its failure if it failed)."""
    h3 = next((q for q in requests if q.get("network") == "udp"), None)
    if h3 is None:
        return ""
    return f"; HTTP/3 {h3.get('failure') or (h3.get('response') or {}).get('code')}"


def observed(keys: Mapping[str, Any]) -> str:
    """One line saying what the measurement saw, most specific evidence first."""
    codes = keys.get("interference")
    if codes:
        return f"interference: {', '.join(codes)} (OONI blocking: {as_json(keys.get('blocking'))})"
    if keys.get("dns_experiment_failure"):
        return f"dns: {keys['dns_experiment_failure']}"
    for shake in keys.get("tls_handshakes") or []:
        if shake.get("failure"):
            return f"tls: {shake['failure']} (server_name {as_json(shake.get('server_name'))})"
    requests = keys.get("requests") or []
    if requests and (requests[0].get("response") or {}).get("code"):
        return _http_line(requests[0]["response"]) + _h3_note(requests)
    failure = keys.get("http_experiment_failure") or keys.get("failure")
    if failure:
        return f"failure: {failure}"
    connects = keys.get("tcp_connect") or []
    if not connects and keys.get("queries"):
        answers = [a.get("ipv4") or a.get("ipv6") for q in keys["queries"]
                   for a in q.get("answers") or []]
        return f"dns: answered {', '.join(a for a in answers if a)}; not dialled (loopback/bogon)"
    if keys.get("reachable") is True:  # an endpoint target (dot://): what it answered
        found = [a for d in keys.get("x_dot") or [] for a in d.get("addresses", [])]
        return "reachable" + (f", answered {', '.join(found)}" if found else "")
    return "no result"


def _timings(keys: Mapping[str, Any], runtime: Any) -> str:
    """``dns 0.012 s, connect 0.003 s, ...``: each step's first try, then the whole."""
    parts = []
    for field, label in _STEPS:
        entries = keys.get(field) or []
        first = entries[0] if entries and isinstance(entries[0], Mapping) else {}
        start, end = first.get("t0"), first.get("t")
        if isinstance(start, int | float) and isinstance(end, int | float):
            parts.append(f"{label} {end - start:.3f} s")
    if isinstance(runtime, int | float):
        parts.append(f"total {runtime:.3f} s")
    return ", ".join(parts) or "none recorded"


def block(record: Mapping[str, Any]) -> str:
    """One target: verdict (the alerts' state and codes), OONI's keys, evidence, timings."""
    keys = record.get("test_keys")
    keys = keys if isinstance(keys, Mapping) else {}
    obs = classify(record)
    state = obs.state if obs is not None else "unobserved"
    codes = f" ({', '.join(obs.codes)})" if obs is not None and obs.codes else ""
    control = "" if keys.get("control") else " (no control: nothing was compared)"
    lines = [str(record.get("input")),
             f"  verdict:  {state}{codes}{control}",
             f"  ooni:     blocking {as_json(keys.get('blocking'))}, "
             f"accessible {as_json(keys.get('accessible'))}",
             f"  seen:     {observed(keys)}",
             f"  timings:  {_timings(keys, record.get('test_runtime'))}"]
    skipped = keys.get("x_skipped")
    if isinstance(skipped, list) and skipped:
        lines.append(f"  skipped:  {plural(len(skipped), 'address', 'addresses')} not dialled")
    return "\n".join(lines) + "\n\n"
