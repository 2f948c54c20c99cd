"""Stamping a record with the network state it was measured in, and setting aside what an
outage explains. Pure: one record and one state in, the same record out.

Every record gets ``x_network_state`` and ``x_network_check`` (the anchor round that decided
the state). During an outage that explains its failure (every failure in a full or an
international outage; a failed lookup in a DNS outage) the record says ``x_outage: true``,
its per-site verdict (``interference``, ``blocking``, ``accessible``) is emptied and kept
under ``x_outage_dropped``, so no per-target "blocked" or "down" is concluded from a cut
cable. Self-proving evidence is never dropped, since an outage cannot produce it: a
blockpage, a bogon or blockpage DNS answer, a known interception CA, or a TLS failure whose
benign-SNI handshake to the same address got through (``sni_blocking_confirmed``). A record
holding such evidence is an observation (no ``x_outage``) and keeps only those codes.
"""

from __future__ import annotations

from typing import Any

from kzprobe.network.checks import failed_at_lookup
from kzprobe.network.state import DNS_OUTAGE, OUTAGES
from kzprobe.verdict import outcome as outcomes
from kzprobe.verdict.outcome import outcome

ALWAYS_PROVING = frozenset({"http.blockpage", "dns.blockpage", "dns.bogon"})
# Codes proven when a benign-SNI handshake to the same address got through.
SNI_PROVING = frozenset({"tls.reset", "tls.timeout", "tls.eof", "throttling"})
MITM = "tls.mitm"  # proven by a known interception CA in the chain (x_tls_mitm_known)


def self_proving(keys: dict[str, Any]) -> list[str]:
    """The record's interference codes that no outage can produce."""
    codes = keys.get("interference")
    if not isinstance(codes, list):
        return []
    confirmed = keys.get("sni_blocking_confirmed") is True
    return [c for c in codes if c in ALWAYS_PROVING or (confirmed and c in SNI_PROVING)
            or (c == MITM and bool(keys.get("x_tls_mitm_known")))]


def explained(record: dict[str, Any], state: str) -> bool:
    """Is the record's failure one that ``state`` accounts for?"""
    if state not in OUTAGES or outcome(record) not in (outcomes.FAILURE, outcomes.ANOMALY):
        return False
    if state == DNS_OUTAGE:
        return failed_at_lookup(record.get("test_keys") or {})
    return True


def flag_record(record: dict[str, Any], state: str, check_id: str | None) -> dict[str, Any]:
    """Stamp ``record`` (in place, and return it) with the state it was measured in."""
    record["x_network_state"] = state
    record["x_network_check"] = check_id
    if not explained(record, state):
        return record
    keys = record.setdefault("test_keys", {})
    kept = self_proving(keys)
    codes = keys.get("interference") if isinstance(keys.get("interference"), list) else []
    dropped: dict[str, Any] = {"interference": [c for c in codes if c not in kept]}
    if kept:
        keys["interference"] = kept  # an observation: what the outage cannot explain stays
    else:
        dropped.update(blocking=keys.get("blocking"), accessible=keys.get("accessible"))
        keys.update(interference=[], blocking=None, accessible=None)
        record["x_outage"] = True
    record["x_outage_dropped"] = dropped
    return record
