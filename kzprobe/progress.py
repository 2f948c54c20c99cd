"""What a run did, counted from its records: a progress line on a terminal and a summary.

:class:`Tally` is pure (no I/O): the engine keeps one per sweep (the daemon's
``sweep_finished`` logs its counts) and the CLI one per run, both counting records with
:func:`~kzprobe.alerts.state.classify`, so the log, the summary and the records agree.
:class:`ProgressLine` is a hand-written single line on stderr (no dependency for a counter
and a rate); the CLI turns it on only when stderr is a terminal and not under systemd.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from kzprobe.alerts.state import STATES, classify

UNOBSERVED = "unobserved"  # interrupted at shutdown, or measured during a network outage
MIN_REDRAW = 0.1  # seconds between redraws of the progress line


@dataclass(slots=True)
class Tally:
    """Counts of records by state and interference code, verdicts with no control, and
    addresses not dialled (``x_skipped``)."""

    records: int = 0
    states: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    no_control: int = 0
    skipped: int = 0
    first_skipped: dict[str, Any] | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        obs = classify(record)
        self.states[obs.state if obs is not None else UNOBSERVED] += 1
        self.codes.update(obs.codes if obs is not None else ())
        keys = record.get("test_keys")
        keys = keys if isinstance(keys, Mapping) else {}
        self.no_control += not keys.get("control")
        skipped = keys.get("x_skipped")
        if isinstance(skipped, list) and skipped:
            self.skipped += len(skipped)
            if self.first_skipped is None and isinstance(skipped[0], dict):
                self.first_skipped = skipped[0]

    def state_counts(self) -> dict[str, int]:
        """Every state (zeros included), then ``unobserved`` when there were any."""
        counts: dict[str, int] = {state: self.states[state] for state in STATES}
        if self.states[UNOBSERVED]:
            counts[UNOBSERVED] = self.states[UNOBSERVED]
        return counts


class ProgressLine:
    """``done/total, rate, blocked so far`` redrawn in place on ``stream`` (a terminal)."""

    def __init__(self, stream: TextIO, total: int, *, label: str = "measured") -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.started = time.monotonic()
        self._drawn = 0.0
        self._visible = False

    def update(self, tally: Tally, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < MIN_REDRAW:
            return
        self._drawn = now
        elapsed = max(now - self.started, 1e-6)
        text = (f"kzprobe: {tally.records}/{self.total} {self.label}, "
                f"{tally.records / elapsed:.1f}/s, {tally.states['blocked']} blocked, "
                f"{tally.states['down']} down")
        self._write(f"\r\x1b[K{text}")
        self._visible = True

    def clear(self) -> None:
        if self._visible:
            self._write("\r\x1b[K")
            self._visible = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal loses the line, not the run
            pass


def summary_lines(tally: Tally, *, outputs: list[str], output_dir: str | None) -> list[str]:
    """The end-of-run summary: counts per state and code, no-control verdicts, addresses
    not dialled, the files written and the report command to run next."""
    states = ", ".join(f"{n} {s}" for s, n in tally.state_counts().items())
    lines = [f"kzprobe: {tally.records} records: {states}"]
    if tally.codes:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(tally.codes.items()))
        lines.append(f"kzprobe: interference: {codes}")
    if tally.no_control:
        lines.append(f"kzprobe: {tally.no_control} of {tally.records} verdicts had no control "
                     f"(unknown, or OONI's rules without one)")
    if tally.skipped:
        lines.append(f"kzprobe: {tally.skipped} addresses not dialled (x_skipped in the "
                     f"records)")
    for path in outputs:
        lines.append(f"kzprobe: wrote {path}")
    if output_dir is not None:
        lines.append(f"kzprobe: next: kzprobe report {output_dir}")
    return lines
