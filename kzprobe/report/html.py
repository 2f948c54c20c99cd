"""``--format html``: one self-contained page (plotly.js inlined, no network to view it).

Figures are Plotly (a maintained library, not hand-drawn SVG): a heatmap of the most
often blocked targets over time, a timeline of each one's blocked periods, the change
events with the network's outage periods as bands, the blocked share per day and
network, and blocked measurements by mechanism and category. Tables and figures are
bounded; the JSON and CSV formats carry every row.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.offline  # type: ignore[import-untyped]

from kzprobe.report.model import TIME_FORMAT, Report, Table
from kzprobe.report.render import blocked_now, errors_table, notes
from kzprobe.report.timeline import describe, shown_outages

MAX_TABLE_ROWS = 500
MAX_TIMELINE_BARS = 5000
MAX_BANDS = 200  # outage periods drawn (the table lists them all, up to MAX_TABLE_ROWS)
MAX_EVENT_MARKERS = 2000  # the latest target changes drawn
MAX_EVENT_ROWS = 150  # targets on the events figure: those that changed most
_BAND_COLOURS = {"full_outage": "#424242", "international_outage": "#6a1b9a",
                 "dns_outage": "#1565c0", "control_unreachable": "#9e9e9e",
                 "degraded": "#ef6c00"}
_KIND_MARKERS = {"blocked": ("#c62828", "x"), "unblocked": ("#2e7d32", "circle"),
                 "mechanism_changed": ("#f9a825", "diamond"), "down": ("#757575", "triangle-down"),
                 "up": ("#1565c0", "triangle-up")}
_EVENT_COLUMNS = ("at", "kind", "probe_asn", "probe_id", "input", "group", "from_state",
                  "from_mechanism", "to_state", "to_mechanism", "sni_blocking_confirmed",
                  "blockpage", "confirmed_at", "evidence")
_MIN_BAR = timedelta(minutes=5)  # a one-measurement period still shows
_COLORSCALE = [[0.0, "#2e7d32"], [0.5, "#f9a825"], [1.0, "#c62828"]]
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.note { color: #666; font-size: 0.85em; }
"""


def _label(row: dict[str, Any]) -> str:
    return f"{row['input']} [{row['probe_asn']}]"


def _figure(fig: Any, div_id: str, height: int) -> str:
    fig.update_layout(template="plotly_white", height=height, margin={"l": 10, "r": 10})
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           default_height=f"{height}px", config={"displaylogo": False}))


def heatmap(report: Report) -> str:
    """Targets (rows) over time (columns), colour = share of measurements blocked."""
    rows = report.table("heatmap").records()
    if not rows:
        return '<p class="note">Nothing was blocked in this window.</p>'
    labels = list(dict.fromkeys(_label(r) for r in rows))
    buckets = sorted({r["bucket"] for r in rows})
    cells = {(_label(r), r["bucket"]): r["blocked"] / r["measurements"] for r in rows}
    z = [[cells.get((label, b)) for b in buckets] for label in labels]
    fig = go.Figure(go.Heatmap(
        z=z, x=buckets, y=labels, zmin=0, zmax=1, colorscale=_COLORSCALE,
        colorbar={"title": {"text": "blocked"}},
        hovertemplate="%{y}<br>%{x}<br>blocked %{z:.0%}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_layout(title=f"Blocked share per {report.summary.get('heatmap_bucket')}")
    return _figure(fig, "heatmap", 160 + 18 * len(labels))


def _bar_span(row: dict[str, Any]) -> tuple[str, float]:
    start = datetime.strptime(row["start"], TIME_FORMAT)
    end = datetime.strptime(row["end"], TIME_FORMAT)
    return row["start"], max(end - start, _MIN_BAR).total_seconds() * 1000


def _band_end(start: str, end: str) -> str:
    """A band's right edge: its end, or ``_MIN_BAR`` after its start if that is later."""
    first = datetime.strptime(start, TIME_FORMAT)
    return max(datetime.strptime(end, TIME_FORMAT), first + _MIN_BAR).strftime(TIME_FORMAT)


def timeline(report: Report) -> str:
    """One row per target of the heatmap: its blocked periods, coloured by mechanism."""
    shown = {_label(r) for r in report.table("heatmap").records()}  # the same targets
    periods = [r for r in report.table("periods").records()
               if r["state"] == "blocked" and _label(r) in shown][:MAX_TIMELINE_BARS]
    if not periods:
        return ""
    fig = go.Figure()
    for mechanism in sorted({r["mechanism"] for r in periods}):
        mine = [r for r in periods if r["mechanism"] == mechanism]
        spans = [_bar_span(r) for r in mine]
        fig.add_trace(go.Bar(
            name=mechanism, orientation="h", y=[_label(r) for r in mine],
            base=[s for s, _ in spans], x=[d for _, d in spans],
            customdata=[[r["start"], r["end"]] for r in mine],
            hovertemplate="%{y}<br>%{customdata[0]} .. %{customdata[1]} UTC<extra>"
                          + html.escape(mechanism) + "</extra>"))
    order = list(dict.fromkeys(_label(r) for r in report.table("heatmap").records()))
    fig.update_xaxes(type="date")
    fig.update_yaxes(categoryorder="array", categoryarray=order, autorange="reversed",
                     automargin=True)
    fig.update_layout(title="Blocked periods (first to last blocked measurement)",
                      barmode="overlay", legend_title_text="mechanism")
    return _figure(fig, "timeline", 200 + 18 * len({_label(r) for r in periods}))


def _network_label(row: dict[str, Any]) -> str:
    return f"network {row['probe_asn']}" + (f" ({row['probe_id']})" if row["probe_id"] else "")


def _span(report: Report, periods: Sequence[dict[str, Any]],
          changes: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Where an open-ended band starts and ends: the first and last time the report knows."""
    since = report.window.since
    times = [t for t in (report.summary["first_seen"], report.summary["last_seen"],
                         since.strftime(TIME_FORMAT) if since else None) if t]
    times += [t for r in periods for t in (r["start"], r["end"]) if t]
    times += [c["at"] for c in changes]
    return min(times), max(times)


def _bands(fig: Any, periods: Sequence[dict[str, Any]], lo: str, hi: str) -> None:
    """Outage periods: a bar on their network's row and a shade across the whole figure
    (the shades set at once: plotly's add_vrect costs tens of ms a call)."""
    shades = []
    for state in sorted({r["state"] for r in periods}):
        mine = [r for r in periods if r["state"] == state]
        colour = _BAND_COLOURS.get(state, "#8d6e63")
        spans = [_bar_span({"start": r["start"] or lo, "end": r["end"] or hi}) for r in mine]
        fig.add_trace(go.Bar(
            name=state, orientation="h", y=[_network_label(r) for r in mine],
            base=[b for b, _ in spans], x=[d for _, d in spans], marker_color=colour,
            customdata=[[r["start"] or "before", r["end"] or "ongoing", r["duration"] or ""]
                        for r in mine],
            hovertemplate="%{y}<br>%{customdata[0]} .. %{customdata[1]} UTC %{customdata[2]}"
                          "<extra>" + html.escape(state) + "</extra>"))
        for r in mine:
            start = r["start"] or lo
            shades.append({"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1,
                           "x0": start, "x1": _band_end(start, r["end"] or hi),
                           "fillcolor": colour, "opacity": 0.12, "line": {"width": 0},
                           "layer": "below"})
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
        return '<p class="note">No change events in this window.</p>'
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
    fig.update_xaxes(type="date")
    fig.update_yaxes(categoryorder="array", categoryarray=order, autorange="reversed",
                     automargin=True)
    fig.update_layout(title="Change events and outage periods (bands)", barmode="overlay",
                      legend_title_text="event or network state")
    return _figure(fig, "events", max(360, 220 + 24 * len(order)))


def daily(report: Report) -> str:
    """Blocked share of measurements per day, one line per probe network."""
    rows = report.table("days").records()
    fig = go.Figure()
    for asn in sorted({str(r["probe_asn"]) for r in rows}):
        mine = [r for r in rows if str(r["probe_asn"]) == asn]
        fig.add_trace(go.Scatter(name=asn, x=[r["day"] for r in mine],
                                 y=[r["blocked_share"] for r in mine], mode="lines+markers"))
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="blocked")
    fig.update_layout(title="Blocked share of measurements per day and network "
                            "(measurements during outages left out)")
    return _figure(fig, "daily", 360)


def breakdown(report: Report) -> str:
    """Blocked measurements per mechanism, stacked by category."""
    rows = report.table("mechanisms").records()
    if not rows:
        return ""
    fig = go.Figure()
    for category in sorted({str(r["category_code"]) for r in rows}):
        mine = [r for r in rows if str(r["category_code"]) == category]
        fig.add_trace(go.Bar(name=category, x=[r["mechanism"] for r in mine],
                             y=[r["measurements"] for r in mine]))
    fig.update_layout(title="Blocked measurements by mechanism and category", barmode="stack",
                      legend_title_text="category")
    return _figure(fig, "breakdown", 420)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def html_table(table: Table, columns: Sequence[str] | None = None,
               limit: int = MAX_TABLE_ROWS) -> str:
    """A bounded HTML table; says how many rows were left out."""
    names = list(columns or table.columns)
    index = [table.columns.index(c) for c in names]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in names)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row[i])}</td>" for i in index) + "</tr>"
                   for row in table.rows[:limit])
    more = len(table.rows) - limit
    note = f'<p class="note">{more} more rows in --format json or csv.</p>' if more > 0 else ""
    return f"<table><tr>{head}</tr>{body}</table>{note}"


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def _list(lines: Sequence[str], limit: int = MAX_TABLE_ROWS) -> str:
    if not lines:
        return '<p class="note">None.</p>'
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[:limit])
    more = len(lines) - limit
    note = f'<p class="note">{more} more in --format json or csv.</p>' if more > 0 else ""
    return f"<ul>{items}</ul>{note}"


def _summary(report: Report) -> str:
    s = report.summary
    return (f"<p>{s['records']} measurements of {s['urls']} URLs on {s['networks']} networks, "
            f"{html.escape(str(s['first_seen']))} to {html.escape(str(s['last_seen']))} UTC; "
            f"{s['files']} files ({s['open_segments']} open), {s['corrupt_lines']} corrupt "
            f"lines. {s['targets_blocked_now']} targets blocked now; {s['changes']} changes; "
            f"{s['events']} change events and {s['outage_periods']} outage periods from "
            f"{s['event_files']} event files.</p>"
            + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes(report)))


def _latest(table: Table) -> Table:
    return Table(table.name, table.columns, tuple(reversed(table.rows)))


def to_html(report: Report) -> bytes:
    """The whole page, with plotly.js inlined once."""
    latest = _latest(report.table("changes"))
    body = "".join([
        "<h1>kzprobe report</h1>", _summary(report),
        _section("Targets over time", heatmap(report), timeline(report)),
        _section("Change events and outages", changes_timeline(report)),
        _section("Outage periods", html_table(shown_outages(report.table("outages")),
                                              ("probe_asn", "probe_id", "state", "start",
                                               "end", "duration"))),
        _section("Change events (latest first)", html_table(_latest(report.table("events")),
                                                            _EVENT_COLUMNS)),
        _section("Per day and network", daily(report)),
        _section("Mechanisms and categories", breakdown(report)),
        _section("Blocked now", _list(blocked_now(report))),
        _section("Changes (latest first)", html_table(latest)),
        _section("Targets", html_table(report.table("targets"))),
        _section("Networks", html_table(report.table("networks"))),
        _section("Categories", html_table(report.table("categories"))),
        _section("Unreadable lines", html_table(errors_table(report), limit=100)),
    ])
    script = plotly.offline.get_plotlyjs()
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>kzprobe report</title><style>{_STYLE}</style>"
            f'<script type="text/javascript">{script}</script></head>'
            f"<body>{body}</body></html>\n")
    return page.encode()
