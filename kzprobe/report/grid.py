"""The status grid: targets (rows) x time bins (columns), one state per cell.

The bin width comes from the data's span and the typical target's measurement interval
(:func:`bin_seconds`: 1 minute .. 1 day, at most ``MAX_COLUMNS`` columns), so an hour of
data and a month of data both fill the page, without a gap between two sweeps.
A cell's state, in this order of precedence:

- ``blocked``: at least one measurement in the bin was blocked (outside an outage); the
  cell is coloured by the *family* of the bin's most frequent mechanism (:func:`family`);
- ``ok``: otherwise, at least one was accessible;
- ``down``: otherwise, at least one was down (the site failed for the control too);
- ``outage``: every measurement was taken during a network outage (no observation);
- ``unknown``: measurements, none decisive (the control failed, ...);
- no cell at all: no measurement of that target in that bin ("no data").

The query reads only table ``m`` (see :mod:`kzprobe.report.sql`); the rows chosen are the
``MAX_ROWS`` targets that matter most: blocked now (the most recently blocked first: the
latest time it was seen accessible), then ever blocked, then down.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from kzprobe.report.model import TIME_FORMAT

MAX_ROWS = 150  # targets on the grid; the targets table lists every one
MAX_COLUMNS = 120
# Bin widths, in seconds, from which the smallest that keeps <= MAX_COLUMNS is taken.
BIN_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
GRID_COLUMNS = ("input", "probe_asn", "bin", "measurements", "blocked", "accessible", "down",
                "outage", "mechanism", "rank")

# Most specific evidence first: a blockpage or an intercepting certificate says more about
# the censor than the timeout that may come with it.
_FAMILIES = (("http.blockpage", "blockpage"), ("dns.blockpage", "blockpage"),
             ("tls.mitm", "mitm"), ("dns.", "dns"), ("ooni.dns", "dns"), ("tcp.", "tcp"),
             ("ooni.tcp", "tcp"), ("tls.", "tls"), ("http.", "http"), ("ooni.http", "http"))
FAMILIES = ("blockpage", "mitm", "dns", "tcp", "tls", "http", "other")
STATES = ("ok", *(f"blocked.{f}" for f in FAMILIES), "down", "outage", "unknown")

# $1 bin width in seconds, $2 rows. Ordered as the page shows them (rank). Written for
# every engine (kzprobe.report.dialect): a bin is the epoch second floored to a multiple of
# the width, and a blocked bin's mechanism its most frequent one (ties: the greater code),
# counted per bin and verdict first, then taken by arg_max over those counts.
GRID = """
WITH per AS (  -- from table sources (kzprobe.report.sql): m folded per target and state
    SELECT input, probe_asn,
        arg_max(state, (last_ts, state)) FILTER (WHERE NOT x_outage) AS last,
        coalesce(sum(n) FILTER (WHERE state = 'blocked' AND NOT x_outage), 0) AS blocked,
        coalesce(sum(n) FILTER (WHERE state = 'down' AND NOT x_outage), 0) AS down,
        max(last_ts) FILTER (WHERE state = 'accessible' AND NOT x_outage) AS last_ok
    FROM sources GROUP BY input, probe_asn
), top AS (
    SELECT input, probe_asn, row_number() OVER (ORDER BY last = 'blocked' DESC NULLS LAST,
        CASE WHEN last = 'blocked' THEN last_ok END DESC NULLS LAST, blocked > 0 DESC,
        last = 'down' DESC NULLS LAST, down > 0 DESC, blocked DESC,
        input, probe_asn) AS rank
    FROM per ORDER BY rank LIMIT $2
), binned AS (
    SELECT input, probe_asn, floor(epoch(measurement_start_time) / $1)::BIGINT * $1 AS b,
        state, x_outage, mechanism, count(*) AS n
    FROM m JOIN top USING (input, probe_asn)
    GROUP BY input, probe_asn, b, state, x_outage, mechanism
), cells AS (
    SELECT input, probe_asn, b, sum(n)::BIGINT AS measurements,
        coalesce(sum(n) FILTER (WHERE state = 'blocked' AND NOT x_outage), 0)::BIGINT
            AS blocked,
        coalesce(sum(n) FILTER (WHERE state = 'accessible' AND NOT x_outage), 0)::BIGINT
            AS accessible,
        coalesce(sum(n) FILTER (WHERE state = 'down' AND NOT x_outage), 0)::BIGINT AS down,
        coalesce(sum(n) FILTER (WHERE x_outage), 0)::BIGINT AS outage,
        arg_max(mechanism, (n, mechanism))
            FILTER (WHERE state = 'blocked' AND NOT x_outage AND mechanism IS NOT NULL)
            AS mechanism
    FROM binned GROUP BY input, probe_asn, b
)
SELECT input, probe_asn, strftime(make_timestamp(b * 1000000), '%Y-%m-%d %H:%M:%S') AS bin,
    measurements, blocked, accessible, down, outage, mechanism, rank
FROM cells JOIN top USING (input, probe_asn) ORDER BY rank, b
"""


# The measurements of the typical target (the median count): its interval sets the finest bin.
TYPICAL_COUNT = ("SELECT median(n) FROM (SELECT sum(n) AS n FROM sources "
                 "GROUP BY input, probe_asn)")


def bin_seconds(first_seen: str | None, last_seen: str | None, typical: float = 1) -> int:
    """The smallest step of ``BIN_STEPS`` that covers the span in ``MAX_COLUMNS`` bins and
    is no finer than the typical target's measurement interval (``typical`` measurements
    over the span), so a target measured every 5 minutes is not drawn as a row of gaps."""
    if first_seen is None or last_seen is None:
        return BIN_STEPS[0]
    span = (datetime.strptime(last_seen, TIME_FORMAT)
            - datetime.strptime(first_seen, TIME_FORMAT)).total_seconds()
    interval = span / (typical - 1) if typical > 1 else 0
    for step in BIN_STEPS:
        # bins are aligned to the epoch: a span of k steps can touch k + 1 of them
        if span <= step * (MAX_COLUMNS - 1) and step >= interval * 0.95:
            return step
    return BIN_STEPS[-1]


def family(mechanism: str | None) -> str:
    """A mechanism's family (the colour of a blocked cell): its most specific code's."""
    codes = (mechanism or "").split("+")
    for prefix, name in _FAMILIES:
        if any(code.startswith(prefix) for code in codes):
            return name
    return "other"


def cell_state(cell: dict[str, Any]) -> str:
    """One cell's state (see the module docstring), one of ``STATES``."""
    if cell["blocked"]:
        return f"blocked.{family(cell['mechanism'])}"
    if cell["accessible"]:
        return "ok"
    if cell["down"]:
        return "down"
    return "outage" if cell["outage"] == cell["measurements"] else "unknown"


def bins(cells: Sequence[dict[str, Any]], step: int) -> list[str]:
    """Every bin from the first cell's to the last cell's, empty ones included."""
    if not cells:
        return []
    starts = [datetime.strptime(c["bin"], TIME_FORMAT) for c in cells]
    first, last = min(starts), max(starts)
    count = int((last - first).total_seconds()) // step + 1
    return [(first + timedelta(seconds=i * step)).strftime(TIME_FORMAT) for i in range(count)]


def step_text(step: int) -> str:
    """``5 min``, ``2 h``, ``1 day``: the bin width as a reader says it."""
    if step >= 86400:
        return f"{step // 86400} day"
    return f"{step // 3600} h" if step >= 3600 else f"{step // 60} min"
