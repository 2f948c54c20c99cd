"""From an anchor's finished record to its :class:`~kzprobe.network.state.AnchorCheck`, and
the resolvers' check from every anchor's lookups. Pure: reads records, no I/O.

An anchor is *reached* when its measurement got through: a website answered (any HTTP
status: the path works), an endpoint was reachable. Its time is what throttling stretches:
the TCP connect, the TLS handshake, the time to the first byte and the body read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kzprobe import failures
from kzprobe.network.state import AnchorCheck, Scope

# A lookup the resolver answered, whatever it said: the resolver works.
_ANSWERED = frozenset({None, failures.DNS_NXDOMAIN_ERROR, failures.DNS_NO_ANSWER})
RESOLVE_OPERATION = "resolve"  # an endpoint record's failed_operation for its lookup


def record_failure(keys: Mapping[str, Any]) -> str | None:
    """Why the measurement did not get through (None: it did)."""
    if "reachable" in keys:  # an endpoint record
        return None if keys.get("reachable") else str(keys.get("failure") or failures.unknown(
            "unreachable"))
    failure = keys.get("dns_experiment_failure") or keys.get("http_experiment_failure")
    if failure is None and not keys.get("requests"):
        return failures.unknown("no request")
    return None if failure is None else str(failure)


def failed_at_lookup(keys: Mapping[str, Any]) -> bool:
    """The failure is the target's own lookup (no address to try): says nothing of the path."""
    if "reachable" in keys:
        return keys.get("failed_operation") == RESOLVE_OPERATION
    if keys.get("dns_experiment_failure") is not None:
        return True
    queries = keys.get("queries")
    return not keys.get("tcp_connect") and isinstance(queries, list) and any(
        isinstance(q, dict) and q.get("failure") is not None for q in queries)


def _span(event: Mapping[str, Any]) -> float | None:
    t0, t = event.get("t0"), event.get("t")
    if isinstance(t0, int | float) and isinstance(t, int | float) and t >= t0:
        return float(t - t0)
    return None


def _first_success(events: Any) -> float | None:
    if not isinstance(events, list):
        return None
    spans = [_span(e) for e in events if isinstance(e, dict) and _succeeded(e)]
    return min((s for s in spans if s is not None), default=None)


def _succeeded(event: Mapping[str, Any]) -> bool:
    status = event.get("status")
    if isinstance(status, dict):
        return bool(status.get("success"))
    return "failure" in event and event.get("failure") is None


def path_seconds(keys: Mapping[str, Any]) -> float | None:
    """Connect + handshake + first byte + body read of the measurement that got through."""
    parts = [_first_success(keys.get("tcp_connect")), _first_success(keys.get("tls_handshakes"))]
    requests = keys.get("requests")
    if isinstance(requests, list) and requests and isinstance(requests[0], dict):
        final = requests[0]
        parts += [final.get("x_ttfb"), final.get("x_body_seconds")]
    known = [float(p) for p in parts if isinstance(p, int | float)]
    return sum(known) if known else None


def anchor_check(anchor: str, scope: Scope, record: Mapping[str, Any]) -> AnchorCheck:
    """The check an anchor's finished record shows."""
    keys = record.get("test_keys") or {}
    failure = record_failure(keys)
    return AnchorCheck(anchor=anchor, scope=scope, failure=failure,
                       dns_failed=failure is not None and failed_at_lookup(keys),
                       seconds=path_seconds(keys) if failure is None else None)


def resolvers_check(records: Iterable[Mapping[str, Any]], scope: Scope) -> AnchorCheck | None:
    """The resolvers' check: answering if any anchor's lookup got an answer; None when no
    anchor needed a lookup (every anchor an address)."""
    seen: Counter[str] = Counter()
    for record in records:
        queries = (record.get("test_keys") or {}).get("queries")
        for query in queries if isinstance(queries, list) else ():
            if not isinstance(query, dict):
                continue
            failure = query.get("failure")
            if failure in _ANSWERED:
                return AnchorCheck(anchor="resolvers", scope=scope, failure=None,
                                   kind="resolvers")
            seen[str(failure)] += 1
    if not seen:
        return None
    return AnchorCheck(anchor="resolvers", scope=scope, failure=seen.most_common(1)[0][0],
                       kind="resolvers")
