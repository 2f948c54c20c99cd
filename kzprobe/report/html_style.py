"""What every part of the HTML page shares: the style sheet, the sorting script, and the
Plotly settings that keep figures readable (time ticks, integer counts, visible legends).

The page must read at 1,366 px and at ~800 px without the page scrolling sideways: tables
are fixed-layout and wrap long URLs; figures follow their container's width.
"""

from __future__ import annotations

from typing import Any

# Tick labels by zoom level: never fractions of a second, the date once the ticks span days.
TICK_FORMATS = [
    {"dtickrange": [None, 60_000], "value": "%H:%M:%S\n%b %d"},
    {"dtickrange": [60_000, 86_400_000], "value": "%H:%M\n%b %d"},
    {"dtickrange": [86_400_000, 604_800_000], "value": "%b %d\n%Y"},
    {"dtickrange": [604_800_000, None], "value": "%b %d\n%Y"},
]

STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: "Liberation Sans", Arial, system-ui, sans-serif; margin: 0 auto;
       padding: 1em 1.5em; max-width: 1400px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.2em; margin: 1.4em 0 0.4em; border-bottom: 1px solid #ddd; }
section.empty h2 { display: inline-block; font-size: 1em; border: 0; margin: 0.6em 0.6em 0 0; }
section.empty p { display: inline; color: #666; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f0f0f0; }
th.sort { cursor: pointer; user-select: none; }
th.sort::after { content: " \\2195"; color: #999; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #222; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #222; }
td.num, th.num { text-align: right; }
table.auto { table-layout: auto; }
table.auto td { overflow-wrap: break-word; } table.auto td:first-child { overflow-wrap: anywhere; }
table.auto td:nth-child(2), table.auto td:nth-child(4), table.auto td.num { white-space: nowrap; }
@media (max-width: 1000px) { body { padding: 0.5em; } table { font-size: 0.78em; } }
.wrap { max-width: 100%; overflow-x: auto; }
.note, .empty { color: #666; font-size: 0.85em; }
.legend { list-style: none; padding: 0; margin: 0.3em 0; display: flex; flex-wrap: wrap;
          gap: 0.3em 1.2em; font-size: 0.85em; }
.sw { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.35em;
      vertical-align: -0.1em; border: 1px solid #bbb; }
.st { display: inline-block; padding: 0 0.4em; border-radius: 3px; color: #fff;
      white-space: nowrap; }
.st-ok { background: #2e7d32; } .st-blocked { background: #c62828; }
.st-down { background: #607d8b; } .st-unknown, .st-accessible { background: #9e9e9e; }
tr.r-blocked td:first-child { border-left: 4px solid #c62828; }
tr.r-down td:first-child { border-left: 4px solid #607d8b; }
tr.r-accessible td:first-child { border-left: 4px solid #2e7d32; }
.blocked-now { margin: 0.3em 0; padding-left: 1.2em; }
details { margin: 0.6em 0; }
summary { cursor: pointer; font-weight: bold; }
.js-plotly-plot, .plotly-graph-div { max-width: 100%; }
code { overflow-wrap: anywhere; }
"""

# Sorts a table's body by the column whose header was clicked: each cell's data-v (or its
# text); numbers numerically, empty cells last. No library: a few lines, inline.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sort").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th.sort").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var num = th.classList.contains("num"), body = table.tBodies[0];
      var key = function (tr) {
        var td = tr.cells[col], v = td.hasAttribute("data-v") ? td.getAttribute("data-v")
                                                               : td.textContent;
        return v === "" ? null : (num ? parseFloat(v) : v.toLowerCase());
      };
      Array.from(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      }).forEach(function (tr) { body.appendChild(tr); });
    });
  });
});
"""


def figure(fig: Any, div_id: str, height: int, top: int = 40) -> str:
    """A figure as a div that follows its container's width (no Plotly title: the page's
    headings say what it is; the legend sits above the plot, never beside it)."""
    fig.update_layout(template="plotly_white", height=height, autosize=True,
                      margin={"l": 10, "r": 10, "t": top, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0,
                              "xanchor": "left"},
                      hoverlabel={"align": "left"})
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           default_width="100%", default_height=f"{height}px",
                           config={"displaylogo": False, "responsive": True}))


def date_axis(fig: Any, side: str = "bottom") -> None:
    """A UTC time axis whose ticks never show fractions of a second."""
    fig.update_xaxes(type="date", tickformatstops=TICK_FORMATS, side=side,
                     hoverformat="%Y-%m-%d %H:%M:%S", automargin=True)


def integer_axis(fig: Any, top: int, axis: str = "y") -> None:
    """A count axis: whole-number ticks from zero, at most about six of them."""
    step, grow = 1, (2, 2.5, 2)  # 1, 2, 5, 10, 20, 50, ...
    i = 0
    while top / step > 6:
        step = int(step * grow[i % 3])
        i += 1
    settings = {"tick0": 0, "dtick": step, "tickformat": ",d", "rangemode": "tozero"}
    (fig.update_yaxes if axis == "y" else fig.update_xaxes)(**settings)
