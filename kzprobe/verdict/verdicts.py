"""A verdict per kind of experiment, typed, so the pipeline never guesses what a tuple means.

A verdict is what retries compare ("the same result again?") and what decides whether a
record looks blocked and keeps its bodies. Both kinds have the same identity on the wire
and in ``x_attempt_verdicts``: ``[blocking, interference]``, where an endpoint's
``blocking`` is its failure (False when reachable). Pure: no I/O, no analysis imports
beyond the endpoint test names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kzprobe.measure.registry import kind_of

Blocking = str | bool | None


class _Identity:
    """Behaviour shared by both kinds, from their ``(blocking, interference)`` identity."""

    __slots__ = ()

    def identity(self) -> tuple[Blocking, tuple[str, ...]]:
        """``(blocking, codes)``: what retries compare and the wire carries."""
        raise NotImplementedError

    def looks_blocked(self) -> bool:
        """Worth measuring again: blocked, failed, or any interference code was set."""
        blocking, codes = self.identity()
        return bool(codes) or blocking not in (False, None)

    def keep_bodies(self, mode: str) -> bool:
        """``output.store_bodies``: ``always``; ``never``; ``anomalous``: only when the
        verdict is not plainly fine (a code, a block, or no verdict at all)."""
        if mode == "always":
            return True
        if mode == "never":
            return False
        blocking, codes = self.identity()
        return bool(codes) or blocking is not False

    def wire(self) -> list[Any]:
        """The orjson form the analysis worker answers with: ``[blocking, codes]``."""
        blocking, codes = self.identity()
        return [blocking, list(codes)]

    def as_attempt(self) -> dict[str, Any]:
        """One entry of ``x_attempt_verdicts`` (docs/record-format.md)."""
        blocking, codes = self.identity()
        return {"blocking": blocking, "interference": list(codes)}


@dataclass(frozen=True, slots=True)
class WebVerdict(_Identity):
    """``web_connectivity``: OONI's ``blocking`` (None: unknown or not judged) and codes."""

    blocking: Blocking = None
    interference: tuple[str, ...] = ()

    def identity(self) -> tuple[Blocking, tuple[str, ...]]:
        return self.blocking, self.interference


@dataclass(frozen=True, slots=True)
class EndpointVerdict(_Identity):
    """Endpoint experiments: ``failure`` is False when reachable, else the failure string
    (None: not judged); the codes need evidence that the failure is not the endpoint's."""

    failure: str | bool | None = None
    interference: tuple[str, ...] = ()

    def identity(self) -> tuple[Blocking, tuple[str, ...]]:
        return self.failure, self.interference


Verdict = WebVerdict | EndpointVerdict


def is_endpoint(test_name: str | None) -> bool:
    return test_name is not None and kind_of(test_name) == "endpoint"


def unjudged(test_name: str | None) -> Verdict:
    """The verdict of a record that got none (interrupted, analysis failed, unknown test)."""
    return EndpointVerdict() if is_endpoint(test_name) else WebVerdict()


def make(test_name: str | None, blocking: Blocking, codes: Sequence[str]) -> Verdict:
    """The verdict of ``test_name``'s kind from its identity (analysis or the wire)."""
    if is_endpoint(test_name):
        return EndpointVerdict(blocking, tuple(codes))
    return WebVerdict(blocking, tuple(codes))


def from_wire(test_name: str, raw: Sequence[Any]) -> Verdict:
    """Inverse of :meth:`wire`, typed by the test the record belongs to."""
    blocking, codes = raw
    return make(test_name, blocking, codes)
