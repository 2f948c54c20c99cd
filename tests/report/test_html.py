"""``--format html``: one self-contained page that renders in headless Chromium, no errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from kzprobe.report import build_report
from kzprobe.report.html import to_html
from kzprobe.report.model import Window
from tests.conftest import IN_CI
from tests.report.builders import lines, web, write

FIGURES = ("grid", "daily", "breakdown")
EVIL = 'https://evil.kz/"><script>console.error("injected")</script>'


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed (Debian package 'chromium')")
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    return path


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the page's console messages (Chromium's log lines)."""
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def test_the_console_check_catches_errors(tmp_path: Path) -> None:
    """The harness sees a console error and a script exception (so its silence means something)."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><script>console.error("boom"); undefinedCall();</script>'
                    "</body></html>")
    _, console = render(page, tmp_path / "profile")
    assert any('"boom"' in line for line in console)
    assert any("undefinedCall is not defined" in line for line in console)


def test_report_page_renders_every_figure_without_console_errors(
        fleet: list[Path], tmp_path: Path) -> None:
    """Plotly draws the status grid, daily and breakdown figures; the console stays quiet."""
    write(fleet[0] / "kz-20240304T000000Z-vps1-100-000004.ndjson",
          lines([web(EVIL, "2024-03-04 00:00:00", interference=["dns.bogon"])]))
    page = tmp_path / "report.html"
    page.write_bytes(to_html(build_report(fleet, heatmap=True)))
    dom, console = render(page, tmp_path / "profile")
    assert console == []
    for figure in FIGURES:
        drawn = re.search(rf'<div id="{figure}" class="plotly-graph-div js-plotly-plot".*?'
                          r'class="main-svg"', dom, re.S)
        assert drawn, f"{figure} was not drawn"
    assert "https://twitter.com/ [AS9198]: blocked since 2024-03-01 02:00:00 UTC" in dom
    assert "&lt;script&gt;console.error" in dom


def test_report_page_is_self_contained(fleet: list[Path]) -> None:
    """No script, style or image is fetched: plotly.js is inlined, nothing points outside."""
    page = to_html(build_report(fleet, heatmap=True)).decode()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # the library itself is inside


def test_events_figure_draws_outage_bands_and_changes(probe: Path, tmp_path: Path) -> None:
    """The events figure draws the target changes as markers and each outage period as a
    band (a bar on its network's row and a shade across); a period that starts where the
    data ends (still ongoing) is a thin mark, not a bar of made-up width; the outage table
    lists them all."""
    page = tmp_path / "report.html"
    page.write_bytes(to_html(build_report([probe], heatmap=True)))
    dom, console = render(page, tmp_path / "profile")
    assert console == []
    figure = re.search(r'<div id="events" class="plotly-graph-div js-plotly-plot".*?'
                       r'class="main-svg"(.*?)</div></div></div>', dom, re.S)
    assert figure, "events was not drawn"
    drawn = figure.group(0)
    assert drawn.count('class="point"') >= 2  # one bar per outage period
    shades = re.findall(r'<path data-index="\d+" fill-rule="evenodd" d="M([\d.]+),[\d.]+H([\d.]+)'
                        r'[^"]*" style="opacity: 0.12;', drawn)
    assert len(shades) == 1 and all(float(right) > float(left) for left, right in shades)
    assert '"symbol":"line-ns-open"' in page.read_text()  # degraded, from 18:00, ongoing
    assert "network AS9198 (vps1)" in drawn and "https://twitter.com/ [AS9198]" in drawn
    assert "<td>international_outage</td><td>2026-12-07 15:00:00</td>" \
           "<td>2026-12-07 15:45:00</td><td>45m 00s</td>" in dom
    assert "<td>ongoing</td>" in dom
    assert "leave out the 2 measurements taken during a network outage" in dom


def test_a_report_without_events_says_so(fleet: list[Path]) -> None:
    """No event log beside the segments: the section says there is nothing to draw."""
    page = to_html(build_report(fleet, heatmap=True)).decode()
    assert '<div id="events"' not in page
    assert "No change events and no outages in this window." in page


def test_an_empty_window_is_one_sentence_per_section(fleet: list[Path]) -> None:
    """Nothing in the window: each section is its heading and one sentence, collapsed onto
    one line; no heading stands bare and no figure is drawn."""
    page = to_html(build_report(fleet, Window(since=datetime(2030, 1, 1)), heatmap=True)).decode()
    sections = re.findall(r"<section[^>]*>.*?</section>", page, re.S)
    assert len(sections) == 7
    collapsed = [s for s in sections if 'class="empty"' in s.split(">", 1)[0]]
    assert len(collapsed) == 6
    for s in collapsed:
        assert re.fullmatch(r'<section[^>]*><h2>[^<]+</h2><p class="empty">[^<]+\.</p></section>',
                            s), s
    assert "No measurements in this window." in page and "Plotly.newPlot(" not in page
