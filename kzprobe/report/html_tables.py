"""The HTML page's tables: the sortable targets table, the per-network comparison, and a
bounded plain table for the rest. Every table is fixed-layout and wraps long URLs, so the
page never scrolls sideways.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from kzprobe.report.model import Report, Table

MAX_TABLE_ROWS = 500
MAX_COMPARE_ROWS = 200  # targets on the per-network comparison
STATE_NAMES = {"accessible": "ok", "blocked": "blocked", "down": "down", "unknown": "no verdict"}
# (heading, key, numeric): the targets table's columns.
_TARGET_COLUMNS = (
    ("Target", "input", False), ("Network", "probe_asn", False),
    ("Category", "category_code", False), ("State now", "state", False),
    ("Mechanism", "mechanism", False), ("Blocked", "blocked_share", True),
    ("Since (UTC)", "since", False), ("Last seen (UTC)", "last_seen", False),
    ("Measure\u00adments", "measurements", True), ("Evidence", "evidence", False))


def esc(value: Any) -> str:
    """A value as escaped cell text: null as empty, lists joined."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def percent(share: float | None) -> str:
    """``0.4286`` as ``42.9 %``; whole numbers without decimals."""
    if share is None:
        return ""
    value = round(share * 100, 1)
    return f"{value:.0f} %" if value == int(value) else f"{value:.1f} %"


def state_badge(state: str | None) -> str:
    """A coloured state label."""
    name = STATE_NAMES.get(state or "", state or "")
    css = "ok" if state == "accessible" else state or "unknown"
    return f'<span class="st st-{html.escape(css)}">{html.escape(name)}</span>'


def empty(sentence: str) -> str:
    """A section's whole content when it has nothing to show."""
    return f'<p class="empty">{html.escape(sentence)}</p>'


def section(title: str, body: str, *, anchor: str = "") -> str:
    """A titled section; one whose body is only its "nothing here" sentence is collapsed
    onto one line with that sentence."""
    ident = f' id="{anchor}"' if anchor else ""
    only = body.startswith('<p class="empty">') and body.count("<p") == 1 and body.endswith("</p>")
    css = ' class="empty"' if only else ""
    return f"<section{ident}{css}><h2>{html.escape(title)}</h2>{body}</section>"


def folded(title: str, count: int, body: str) -> str:
    """A long reference table, closed until asked for (a sentence if it has no rows)."""
    if not count:
        return empty(f"{title}: none.")
    return f"<details><summary>{html.escape(title)} ({count})</summary>{body}</details>"


def _more(total: int, limit: int) -> str:
    more = total - limit
    return f'<p class="note">{more} more rows in --format json or csv.</p>' if more > 0 else ""


def plain_table(table: Table, columns: Sequence[str] | None = None,
                limit: int = MAX_TABLE_ROWS) -> str:
    """A bounded table with the given columns; says how many rows were left out."""
    names = list(columns or table.columns)
    index = [table.columns.index(c) for c in names]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in names)
    body = "".join("<tr>" + "".join(f"<td>{esc(row[i])}</td>" for i in index) + "</tr>"
                   for row in table.rows[:limit])
    return (f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"</table></div>{_more(len(table.rows), limit)}")


def _evidence_cell(ev: dict[str, Any] | None) -> tuple[str, str]:
    """A link to the segment holding the target's latest record, with its line and uid."""
    if ev is None:
        return "", ""
    name = str(ev["file"]).rsplit("/", 1)[-1]
    short = name.rsplit("-", 1)[-1]  # the writer's sequence number and suffix
    where = f"{name}:{ev['line']}"
    title = f"{where}, x_measurement_uid {ev['uid']}" if ev.get("uid") else where
    href = html.escape(str(ev["href"]), quote=True)
    shown = html.escape(short).replace(".", "<wbr>.", 1)  # may break before the suffix
    return where, f'<a href="{href}" title="{esc(title)}">{shown}:{ev["line"]}</a>'


def _target_cells(row: dict[str, Any], ev: dict[str, Any] | None) -> str:
    cells = []
    for _, key, numeric in _TARGET_COLUMNS:
        value = row.get(key)
        if key == "state":
            text, sort = state_badge(value), STATE_NAMES.get(value or "", "")
        elif key == "blocked_share":
            text, sort = percent(value), "" if value is None else str(value)
        elif key == "evidence":
            sort, text = _evidence_cell(ev)
        else:
            text, sort = esc(value), "" if value is None else str(value)
        css = ' class="num"' if numeric else ""
        cells.append(f'<td{css} data-v="{html.escape(sort, quote=True)}">{text}</td>')
    return "".join(cells)


def targets_table(report: Report, limit: int = MAX_TABLE_ROWS) -> str:
    """Every target (up to ``limit``): state now, mechanism, blocked share, evidence."""
    rows = report.table("targets").records()
    if not rows:
        return empty("No targets were measured in this window.")
    evidence = {(e["input"], e["probe_asn"]): e for e in _records(report, "evidence")}
    head = "".join(f'<th class="sort{" num" if n else ""}" scope="col">{t}</th>'
                   for t, _, n in _TARGET_COLUMNS)
    body = "".join(
        f'<tr class="r-{esc(r["state"])}">'
        f'{_target_cells(r, evidence.get((r["input"], r["probe_asn"])))}</tr>'
        for r in rows[:limit])
    return (f'<p class="note">Click a heading to sort. Blocked is the share of measurements '
            f"outside network outages. Evidence links the segment holding the target's "
            f"latest record, or latest blocked record if it is blocked now (segment:line; "
            f"hover for the file name and the measurement uid).</p>"
            f'<div class="wrap"><table class="sortable auto" id="targets-table">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            + _more(len(rows), limit))


def _records(report: Report, name: str) -> list[dict[str, Any]]:
    try:
        return report.table(name).records()
    except KeyError:
        return []


def networks_table(report: Report) -> str:
    """One row per probe network: what it measured and how much of it was blocked."""
    rows = report.table("networks").records()
    if not rows:
        return ""
    head = ("<tr><th>Network</th><th>Name</th><th class=\"num\">Measurements</th>"
            "<th class=\"num\">Targets</th><th class=\"num\">Blocked now</th>"
            "<th class=\"num\">Blocked</th><th>First seen</th><th>Last seen</th></tr>")
    body = "".join(
        f"<tr><td>{esc(r['probe_asn'])}</td><td>{esc(r['probe_network_name'])}</td>"
        f"<td class=\"num\">{r['measurements']}</td><td class=\"num\">{r['targets']}</td>"
        f"<td class=\"num\">{r['targets_blocked_now']}</td>"
        f"<td class=\"num\">{percent(r['blocked_share'])}</td>"
        f"<td>{esc(r['first_seen'])}</td><td>{esc(r['last_seen'])}</td></tr>" for r in rows)
    return f'<div class="wrap"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def comparison(report: Report) -> str:
    """Targets blocked on at least one network (rows) x networks (columns): state now."""
    rows = report.table("targets").records()
    networks = sorted({str(r["probe_asn"]) for r in rows})
    if not networks:
        return empty("No probe network measured in this window.")
    if len(networks) < 2:
        return empty(f"One probe network ({networks[0]}): nothing to compare.")
    state = {(r["input"], str(r["probe_asn"])): r for r in rows}
    targets = sorted({r["input"] for r in rows if r["state"] == "blocked" or r["blocked"]})
    if not targets:
        return empty("No target was blocked on any network in this window.")
    head = "<tr><th>Target</th>" + "".join(f"<th>{esc(n)}</th>" for n in networks) + "</tr>"
    body = []
    for url in targets[:MAX_COMPARE_ROWS]:
        cells = []
        for net in networks:
            r = state.get((url, net))
            cells.append("<td>not measured</td>" if r is None else
                         f"<td>{state_badge(r['state'])} {esc(r['mechanism'])}</td>")
        body.append(f"<tr><td>{esc(url)}</td>{''.join(cells)}</tr>")
    return (f'<p class="note">State now of each target ever blocked, per probe network.</p>'
            f'<div class="wrap"><table id="compare"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>" + _more(len(targets), MAX_COMPARE_ROWS))
