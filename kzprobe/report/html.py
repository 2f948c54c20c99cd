"""``--format html``: one self-contained page (plotly.js inlined, no network to view it).

Laid out for an analyst, most telling first: what is blocked now; the status grid
(targets x time, coloured by state and mechanism family, :mod:`kzprobe.report.html_grid`);
the change events over the network's outage periods; the per-network comparison; the
sortable targets table with links to the evidence; then trends and the reference tables,
folded. A section with nothing to show is one line saying so. Figures and tables are
bounded; the JSON and CSV formats carry every row.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.offline  # type: ignore[import-untyped]

from kzprobe.report import html_tables as tables
from kzprobe.report.html_grid import status_grid
from kzprobe.report.html_style import SORT_SCRIPT, STYLE, date_axis, figure, integer_axis
from kzprobe.report.html_tables import empty, folded, plain_table, section
from kzprobe.report.model import TIME_FORMAT, Report, Table
from kzprobe.report.render import blocked_now, errors_table, notes
from kzprobe.report.timeline import describe, shown_outages

MAX_BANDS = 200  # outage periods drawn (the table lists them all, up to MAX_TABLE_ROWS)
MAX_EVENT_MARKERS = 2000  # the latest target changes drawn
MAX_EVENT_ROWS = 150  # targets on the events figure: those that changed most
MAX_BLOCKED_LINES = 15  # the "Blocked now" list; the targets table has every one
_BAND_COLOURS = {"full_outage": "#424242", "international_outage": "#6a1b9a",
                 "dns_outage": "#1565c0", "control_unreachable": "#9e9e9e",
                 "degraded": "#ef6c00"}
_KIND_MARKERS = {"blocked": ("#c62828", "x"), "unblocked": ("#2e7d32", "circle"),
                 "mechanism_changed": ("#f9a825", "diamond"), "down": ("#757575", "triangle-down"),
                 "up": ("#1565c0", "triangle-up")}
_EVENT_COLUMNS = ("at", "kind", "probe_asn", "probe_id", "input", "from_state",
                  "from_mechanism", "to_state", "to_mechanism", "evidence")


def _label(row: dict[str, Any]) -> str:
    """A target's row label, escaped: plotly reads tags in labels, entities are text."""
    return html.escape(f"{row['input']} [{row['probe_asn']}]")


def _network_label(row: dict[str, Any]) -> str:
    return f"network {row['probe_asn']}" + (f" ({row['probe_id']})" if row["probe_id"] else "")


def _span(report: Report, periods: Sequence[dict[str, Any]],
          changes: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Where an open-ended band starts and ends: the first and last time the report knows."""
    times = [t for t in (report.summary["first_seen"], report.summary["last_seen"]) if t]
    times += [t for r in periods for t in (r["start"], r["end"]) if t]
    times += [c["at"] for c in changes]
    return min(times), max(times)


def _ms(start: str, end: str) -> float:
    """A bar's length on a date axis: milliseconds from ``start`` to ``end``."""
    return (datetime.strptime(end, TIME_FORMAT)
            - datetime.strptime(start, TIME_FORMAT)).total_seconds() * 1000


def _bands(fig: Any, periods: Sequence[dict[str, Any]], lo: str, hi: str) -> None:
    """Outage periods: a bar on their network's row and a shade across the whole figure
    (the shades set at once: plotly's add_vrect costs tens of ms a call). A period that
    starts and ends at one instant is a thin mark, not a bar of made-up width."""
    shades = []
    for state in sorted({r["state"] for r in periods}):
        mine = [r for r in periods if r["state"] == state]
        colour = _BAND_COLOURS.get(state, "#8d6e63")
        spans = [(r["start"] or lo, r["end"] or hi) for r in mine]
        custom = [[r["start"] or "before", r["end"] or "ongoing", r["duration"] or ""]
                  for r in mine]
        hover = ("%{y}<br>%{customdata[0]} .. %{customdata[1]} UTC %{customdata[2]}"
                 "<extra>" + html.escape(state) + "</extra>")
        bars = [i for i, (a, b) in enumerate(spans) if a != b]
        fig.add_trace(go.Bar(
            name=state, orientation="h", y=[_network_label(mine[i]) for i in bars],
            base=[spans[i][0] for i in bars], x=[_ms(*spans[i]) for i in bars],
            marker_color=colour, legendgroup=state, customdata=[custom[i] for i in bars],
            hovertemplate=hover))
        instants = [i for i, (a, b) in enumerate(spans) if a == b]
        if instants:
            fig.add_trace(go.Scatter(
                name=state, mode="markers", showlegend=not bars, legendgroup=state,
                x=[spans[i][0] for i in instants], y=[_network_label(mine[i]) for i in instants],
                marker={"color": colour, "symbol": "line-ns-open", "size": 16,
                        "line": {"width": 3}},
                customdata=[custom[i] for i in instants], hovertemplate=hover))
        shades += [{"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1,
                    "x0": a, "x1": b, "fillcolor": colour, "opacity": 0.12,
                    "line": {"width": 0}, "layer": "below"} for a, b in spans if a != b]
    fig.update_layout(shapes=shades)


def _markers(fig: Any, changes: Sequence[dict[str, Any]]) -> None:
    """Target changes: one marker per event on its target's row, by kind."""
    for kind in sorted({c["kind"] for c in changes}):
        mine = [c for c in changes if c["kind"] == kind]
        colour, symbol = _KIND_MARKERS.get(kind, ("#000000", "square"))
        fig.add_trace(go.Scatter(
            name=kind, mode="markers", x=[c["at"] for c in mine], y=[_label(c) for c in mine],
            marker={"color": colour, "symbol": symbol, "size": 10},
            text=[html.escape(describe(c)) for c in mine],
            hovertemplate="%{text}<extra></extra>"))


def changes_timeline(report: Report) -> str:
    """Confirmed changes of targets (markers) over the network's outage periods (bands)."""
    periods = report.table("outages").records()[:MAX_BANDS]
    changes = [r for r in report.table("events").records()
               if r["scope"] != "network"][-MAX_EVENT_MARKERS:]
    if not periods and not changes:
        return ""
    busiest: dict[str, int] = {}
    for c in changes:
        busiest[_label(c)] = busiest.get(_label(c), 0) + 1
    rows = sorted(busiest, key=lambda label: (-busiest[label], label))[:MAX_EVENT_ROWS]
    changes = [c for c in changes if _label(c) in set(rows)]
    lo, hi = _span(report, periods, changes)
    fig = go.Figure()
    _bands(fig, periods, lo, hi)
    _markers(fig, changes)
    order = sorted({_network_label(r) for r in periods}) + sorted(rows)
    date_axis(fig)
    fig.update_yaxes(categoryorder="array", categoryarray=order, autorange="reversed",
                     automargin=True, type="category")
    fig.update_layout(barmode="overlay", showlegend=True)
    return figure(fig, "events", max(300, 160 + 28 * len(order)))


def daily(report: Report) -> str:
    """Blocked share of measurements per day, one line per probe network."""
    rows = report.table("days").records()
    if not rows:
        return ""
    fig = go.Figure()
    for asn in sorted({str(r["probe_asn"]) for r in rows}):
        mine = [r for r in rows if str(r["probe_asn"]) == asn]
        fig.add_trace(go.Scatter(
            name=asn, x=[r["day"] for r in mine], y=[r["blocked_share"] for r in mine],
            mode="lines+markers",
            hovertemplate="%{x|%Y-%m-%d}: %{y:.1%} blocked<extra>" + html.escape(asn)
                          + "</extra>"))
    fig.update_xaxes(type="date", tickformat="%b %d\n%Y", dtick=86_400_000, automargin=True)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="blocked")
    return ("<h3>Blocked share of measurements per day and network</h3>"
            + figure(fig, "daily", 320))


def breakdown(report: Report) -> str:
    """Blocked measurements per mechanism, stacked by category."""
    rows = report.table("mechanisms").records()
    if not rows:
        return ""
    fig = go.Figure()
    totals: dict[str, int] = {}
    for category in sorted({str(r["category_code"]) for r in rows}):
        mine = [r for r in rows if str(r["category_code"]) == category]
        fig.add_trace(go.Bar(name=category, x=[r["mechanism"] for r in mine],
                             y=[r["measurements"] for r in mine]))
        for r in mine:
            totals[r["mechanism"]] = totals.get(r["mechanism"], 0) + r["measurements"]
    fig.update_layout(barmode="stack", legend_title_text="category", showlegend=True)
    integer_axis(fig, max(totals.values()))
    fig.update_yaxes(title="measurements")
    return ("<h3>Blocked measurements by mechanism and category</h3>"
            + figure(fig, "breakdown", 360))


def _summary(report: Report) -> str:
    s = report.summary
    if not s["records"]:
        return "<p>No measurements in this window.</p>"
    nets = "network" if s["networks"] == 1 else "networks"
    urls = "URL" if s["urls"] == 1 else "URLs"
    return (f"<p><b>{s['records']}</b> measurements of <b>{s['urls']}</b> {urls} on "
            f"{s['networks']} {nets}, {html.escape(str(s['first_seen']))} to "
            f"{html.escape(str(s['last_seen']))} UTC, from {s['files']} files "
            f"({s['open_segments']} open, {s['corrupt_lines']} unreadable lines). "
            f"<b>{s['targets_blocked_now']}</b> targets blocked now; {s['changes']} inferred "
            f"changes; {s['events']} change events and {s['outage_periods']} outage periods "
            f"from {s['event_files']} event files.</p>"
            + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes(report)))


def _blocked_now(report: Report) -> str:
    lines = blocked_now(report)
    if not lines:
        return section("Blocked now", empty("Nothing is blocked now."))
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[:MAX_BLOCKED_LINES])
    more = len(lines) - MAX_BLOCKED_LINES
    tail = (f'<p class="note">{more} more in the <a href="#all-targets">targets table</a>.</p>'
            if more > 0 else "")
    return section(f"Blocked now ({len(lines)})",
                   f'<ul class="blocked-now">{items}</ul>{tail}')


def _changes(report: Report) -> str:
    drawn = changes_timeline(report)
    outages = shown_outages(report.table("outages"))
    events = report.table("events")
    if not drawn:
        return section("Changes and outages",
                       empty("No change events and no outages in this window."))
    outage_part = (plain_table(outages, ("probe_asn", "probe_id", "state", "start", "end",
                                         "duration"))
                   if outages.rows else empty("No outages in this window."))
    latest = Table(events.name, events.columns, tuple(reversed(events.rows)))
    return section("Changes and outages", (
        '<p class="note">Confirmed change events of targets (markers) over the outage '
        "periods of each probe network (bands, shaded across).</p>" + drawn
        + "<h3>Outage periods</h3>" + outage_part
        + folded("Change events, latest first", len(events.rows),
                 plain_table(latest, _EVENT_COLUMNS))))


def _reference(report: Report) -> str:
    changes = report.table("changes")
    latest = Table(changes.name, changes.columns, tuple(reversed(changes.rows)))
    errors = errors_table(report)
    parts = [folded("Inferred changes, latest first", len(changes.rows), plain_table(latest)),
             folded("Categories", len(report.table("categories").rows),
                    plain_table(report.table("categories")))]
    parts.append(folded("Unreadable lines", len(errors.rows), plain_table(errors, limit=100)))
    return section("Reference tables", "".join(parts))


def _trends(report: Report) -> str:
    body = daily(report) + breakdown(report)
    if not body:
        return section("Trends", empty("No measurements to chart."))
    return section("Trends", body)


def to_html(report: Report) -> bytes:
    """The whole page, with plotly.js inlined once."""
    compare = tables.comparison(report)
    body = "".join([
        "<h1>kzprobe report</h1>", _summary(report), _blocked_now(report),
        section("Status grid", status_grid(report), anchor="status"),
        _changes(report),
        section("Per network", compare + (
            f"<h3>Networks</h3>{tables.networks_table(report)}"
            if report.table("networks").rows else "")),
        section("Targets", tables.targets_table(report), anchor="all-targets"),
        _trends(report), _reference(report),
    ])
    script = plotly.offline.get_plotlyjs()
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>kzprobe report</title><style>{STYLE}</style>"
            f'<script type="text/javascript">{script}</script></head>'
            f"<body>{body}<script>{SORT_SCRIPT}</script></body></html>\n")
    return page.encode()
