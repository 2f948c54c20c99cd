"""The status grid as a Plotly heatmap of discrete states, with its legend and data island.

Each cell is one target in one time bin, coloured by :func:`kzprobe.report.grid.cell_state`.
The same cells are also written as JSON (``<script type="application/json"
id="grid-data">``) so a test, or an analyst's script, can check the picture against the data.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

import orjson
import plotly.graph_objects as go  # type: ignore[import-untyped]

from kzprobe.report import grid
from kzprobe.report.html_style import date_axis, figure
from kzprobe.report.model import TIME_FORMAT, Report

MAX_LABEL = 48  # characters of a URL on the grid's rows; the hover shows it whole
COLOURS = {
    "ok": "#81c784", "blocked.blockpage": "#6a1b9a", "blocked.mitm": "#ad1457",
    "blocked.dns": "#c62828", "blocked.tcp": "#e65100", "blocked.tls": "#f9a825",
    "blocked.http": "#795548", "blocked.other": "#37474f", "down": "#90a4ae",
    "outage": "#212121", "unknown": "#d7ccc8",
}
NO_DATA = "#f5f5f5"
_NAMES = {"ok": "ok", "down": "down (fails for the control too)",
          "outage": "network outage (no observation)", "unknown": "no verdict"}


def state_name(state: str) -> str:
    """A state as the legend and hover say it: ``blocked (dns)``."""
    if state.startswith("blocked."):
        return f"blocked ({state.removeprefix('blocked.')})"
    return _NAMES.get(state, state)


def _label(text: str, asn: str | None) -> str:
    short = text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"
    return html.escape(f"{short} [{asn}]")  # plotly reads tags in labels; entities are text


def _rows(cells: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return list(dict.fromkeys((c["input"], c["probe_asn"]) for c in cells))


def _labels(rows: list[tuple[str, str | None]]) -> list[str]:
    """Row labels, unique even when two long URLs share their first characters."""
    out: list[str] = []
    for url, asn in rows:
        label = _label(url, asn)
        while label in out:
            label += " "
        out.append(label)
    return out


def _colorscale() -> list[list[Any]]:
    """A stepped colour scale: state index i is one flat band of colour."""
    n = len(grid.STATES)
    scale: list[list[Any]] = []
    for i, state in enumerate(grid.STATES):
        scale += [[i / n, COLOURS[state]], [(i + 1) / n, COLOURS[state]]]
    return scale


def _hover(cell: dict[str, Any] | None, state: str | None) -> list[str]:
    if cell is None or state is None:
        return ["no data", "no measurement in this bin"]
    counts = (f"{cell['measurements']} measurements: {cell['blocked']} blocked, "
              f"{cell['accessible']} ok, {cell['down']} down, {cell['outage']} in an outage")
    if cell["mechanism"]:
        counts += f"<br>mechanism {html.escape(str(cell['mechanism']))}"
    return [state_name(state), counts]


def island(step: int, bins: list[str], rows: list[tuple[str, str | None]],
           cells: list[dict[str, Any]], states: list[str]) -> str:
    """The grid's cells as JSON inside the page (``</`` escaped so it cannot end the script)."""
    index = {r: i for i, r in enumerate(rows)}
    column = {b: i for i, b in enumerate(bins)}
    data = {"bin_s": step, "bins": bins,
            "rows": [{"input": u, "probe_asn": a} for u, a in rows],
            "cells": [[index[(c["input"], c["probe_asn"])], column[c["bin"]], s,
                       c["measurements"], c["blocked"]] for c, s in zip(cells, states,
                                                                       strict=True)]}
    text = orjson.dumps(data).decode().replace("</", "<\\/")
    return f'<script type="application/json" id="grid-data">{text}</script>'


def legend(present: set[str]) -> str:
    """Colour swatches for the states on the grid, plus "no data"."""
    items = [(COLOURS[s], state_name(s)) for s in grid.STATES if s in present]
    items.append((NO_DATA, "no data"))
    return '<ul class="legend">' + "".join(
        f'<li><span class="sw" style="background:{c}"></span>{html.escape(n)}</li>'
        for c, n in items) + "</ul>"


def status_grid(report: Report) -> str:
    """The grid figure, its legend and data island; a sentence when there is no data."""
    cells = report.table("grid").records()  # every engine computes it (report/grid.py)
    if not cells:
        return '<p class="empty">No measurements in this window.</p>'
    step = int(report.summary["grid_bin_s"])
    bins = grid.bins(cells, step)
    rows = _rows(cells)
    states = [grid.cell_state(c) for c in cells]
    code = {s: i for i, s in enumerate(grid.STATES)}
    at = {(c["input"], c["probe_asn"], c["bin"]): (c, s) for c, s in zip(cells, states,
                                                                        strict=True)}
    z = [[code[at[(u, a, b)][1]] if (u, a, b) in at else None for b in bins] for u, a in rows]
    custom = [[[html.escape(f"{u} [{a}]"), *_hover(*at.get((u, a, b), (None, None))), b]
               for b in bins] for u, a in rows]
    half = timedelta(seconds=step / 2)  # a cell is drawn centred on its x: the bin's middle
    centres = [(datetime.strptime(b, TIME_FORMAT) + half).strftime("%Y-%m-%d %H:%M:%S.%f")
               for b in bins]
    n = len(grid.STATES)
    fig = go.Figure(go.Heatmap(
        z=z, x=centres, y=_labels(rows), customdata=custom, zmin=-0.5, zmax=n - 0.5,
        colorscale=_colorscale(), showscale=False, xgap=1, ygap=1, hoverongaps=True,
        hovertemplate="%{customdata[0]}<br>%{customdata[3]} UTC + "
                      + grid.step_text(step)
                      + "<br><b>%{customdata[1]}</b><br>%{customdata[2]}<extra></extra>"))
    on_top = len(rows) > 25  # a tall grid: the time axis where the reader starts
    date_axis(fig, side="top" if on_top else "bottom")
    fig.update_yaxes(autorange="reversed", automargin=True, type="category")
    fig.update_layout(plot_bgcolor=NO_DATA)
    top = 80 if on_top else 40  # on top, the ticks need room below plotly's toolbar
    html_fig = figure(fig, "grid", top + 50 + 20 * len(rows), top=top)
    total = len(report.table("targets").rows)
    shown = f"{len(rows)} of {total}" if total > len(rows) else f"{len(rows)}"
    caption = (f'<p class="note">{shown} target{"s" if len(rows) != 1 else ""} '
               "(blocked now first, the latest blocked at the top; then ever blocked, "
               f"then down) x {len(bins)} bins of {grid.step_text(step)}; a bin is blocked "
               "when any of its measurements was. Hover a cell for its counts.</p>")
    return (legend(set(states)) + html_fig + caption
            + island(step, bins, rows, cells, states))
