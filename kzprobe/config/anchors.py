"""The ``[network]`` section: connectivity anchors and how their results become a network
state (:mod:`kzprobe.network`). Not to be confused with :mod:`kzprobe.config.network`, which
reads addresses.

An anchor is ``{ target = URI, scope = "domestic" | "international" }``: any target URI
kzprobe measures (``tcp://``, ``tls://``, ``https://``, ``http://``; the other endpoint
schemes work too), validated here as a target list entry is, or the word ``resolvers``: the
configured ``[dns] resolvers``, judged by whether they answer the anchors' own lookups.
"""

from __future__ import annotations

from typing import Any

from kzprobe.config.model import RESOLVERS_ANCHOR, Anchor, NetworkConfig
from kzprobe.config.section import DAY, _Section, did_you_mean
from kzprobe.targets import parse_target

MAX_ANCHORS = 64  # each is measured every interval: a handful is the point
_ANCHOR_KEYS = frozenset({"target", "scope"})
_SCOPES = ("domestic", "international")


def _anchor(s: _Section, index: int, entry: Any) -> Anchor:
    if not isinstance(entry, dict) or "target" not in entry or "scope" not in entry:
        raise s.fail(("anchors", index), 'expected { target = "URI", scope = "domestic" '
                                         'or "international" }')
    unknown = sorted(entry.keys() - _ANCHOR_KEYS)
    if unknown:
        raise s.fail(("anchors", index), f"unknown key {unknown[0]!r}"
                                         f"{did_you_mean(unknown[0], _ANCHOR_KEYS)}")
    target, scope = entry["target"], entry["scope"]
    if scope not in _SCOPES:
        raise s.fail(("anchors", index, "scope"), f"must be domestic or international, got "
                                                  f"{scope!r}{did_you_mean(str(scope), _SCOPES)}")
    if not isinstance(target, str):
        raise s.fail(("anchors", index, "target"), f"expected a string, got {target!r}")
    if target != RESOLVERS_ANCHOR:
        try:
            target = parse_target(target, origin="[network] anchors").input
        except ValueError as exc:
            raise s.fail(("anchors", index, "target"), str(exc)) from None
    return Anchor(target=target, scope=scope)


def _anchors(s: _Section) -> tuple[Anchor, ...]:
    entries = s.get("anchors", list, [])
    if len(entries) > MAX_ANCHORS:
        raise s.fail("anchors", f"at most {MAX_ANCHORS} anchors, got {len(entries)}")
    anchors = tuple(s.each(entries, lambda index, entry: _anchor(s, index, entry)))
    names = [a.target for a in anchors]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise s.fail("anchors", f"{duplicate!r} is listed twice")
    if len(anchors) < len(entries):  # an entry had an error: what is left proves nothing
        return anchors
    scopes = {a.scope for a in anchors if a.target != RESOLVERS_ANCHOR}
    if anchors and len(scopes) < len(_SCOPES):
        s.warn("anchors", "list domestic and international anchors: with one scope only, an "
                          "international outage cannot be told from a full one")
    named = [a for a in anchors if a.target != RESOLVERS_ANCHOR
             and not parse_target(a.target).host_is_ip]
    if RESOLVERS_ANCHOR in names and not named:
        s.warn("anchors", "'resolvers' are judged by the anchors' own lookups: list an "
                          "anchor by name too, or they are never checked")
    return anchors


def _parse_network(s: _Section) -> NetworkConfig:
    d = NetworkConfig()
    network = _network(s, d)
    if network.baseline_min_samples > network.baseline_samples \
            and not s.failed("baseline_samples", "baseline_min_samples"):
        raise s.fail("baseline_min_samples", f"must be <= baseline_samples "
                                             f"({network.baseline_samples})")
    return network


def _network(s: _Section, d: NetworkConfig) -> NetworkConfig:
    rate = s.number("outage_rate", d.outage_rate, maximum=1.0)
    return NetworkConfig(
        interval=s.number("interval", d.interval, minimum=0.1, positive=False, maximum=DAY),
        anchors=_anchors(s),
        outage_rate=rate,
        confirm=s.integer("confirm", d.confirm, maximum=100),
        recover=s.integer("recover", d.recover, maximum=100),
        recheck=s.number("recheck", d.recheck, minimum=0.1, positive=False, maximum=DAY),
        degraded_factor=s.number("degraded_factor", d.degraded_factor, minimum=1.0,
                                 maximum=1e6),
        degraded_min_seconds=s.number("degraded_min_seconds", d.degraded_min_seconds,
                                      positive=False, maximum=DAY),
        baseline_samples=s.integer("baseline_samples", d.baseline_samples, maximum=10_000),
        baseline_min_samples=s.integer("baseline_min_samples", d.baseline_min_samples,
                                       maximum=10_000),
    )
