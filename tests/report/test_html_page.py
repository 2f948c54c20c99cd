"""The HTML page in headless Chromium, on segments written by kzprobe's own writer.

Three hours of five-minute sweeps over two networks (blocked by each mechanism family, a
change, a site down, records in an outage, a target measured only now and then) go
through ``NdjsonSink``; ``kzprobe report --format html`` renders them. Chromium then says
whether the page overflows sideways at 1,366 and 800 px, logs anything to the console,
or fetches anything, and what the status grid drew; the grid is checked cell by cell
against a count made here from the records as written. Set ``KZPROBE_SCREENSHOTS`` to a
directory to keep the screenshots (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from kzprobe.config.model import OutputConfig
from kzprobe.report.command import ReportRequest, run
from kzprobe.storage.sink import NdjsonSink
from tests.report.builders import web
from tests.report.conftest import in_outage
from tests.report.test_html import _chromium

SWEEPS = 36  # every 5 minutes for three hours: 5-minute bins (2 would leave gaps between sweeps)
STEP = 300
EVIL = 'https://evil.example/"><script>console.error("injected")</script>'
Tag = str  # the state a record was written to have: ok, down, outage, blocked.<family>


def _record(url: str, when: str, tag: Tag, asn: str = "AS9198") -> dict[str, Any]:
    """A record of the given state; ``tag`` is what the grid must show for it alone."""
    mechanism = {"blocked.dns": ["dns.nxdomain"], "blocked.tls": ["tls.timeout"],
                 "blocked.blockpage": ["http.blockpage"], "blocked.mitm": ["tls.mitm"],
                 "blocked.tcp": ["tcp.reset"]}
    if tag == "ok":
        rec = web(url, when, asn=asn)
    elif tag == "down":
        rec = web(url, when, asn=asn, accessible=False)
    elif tag == "outage":
        rec = in_outage(web(url, when, asn=asn, blocking=None, accessible=None))
    elif tag == "blocked.ooni-tcp":
        rec = web(url, when, asn=asn, blocking="tcp_ip", accessible=False)
    else:
        rec = web(url, when, asn=asn, blocking="http-failure", accessible=False,
                  interference=mechanism[tag])
    return rec | {"x_measurement_uid": uuid.uuid4().hex}


def _plan(start: datetime) -> list[tuple[dict[str, Any], Tag]]:
    """Every record to write, with the state it was written to have."""
    out = []
    for i in range(SWEEPS):
        when = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        sweep = [("https://news.example/", "blocked.dns", "AS9198"),
                 ("https://social.example/", "ok" if i < 18 else "blocked.tls", "AS9198"),
                 ("http://banned.example/", "blocked.blockpage", "AS9198"),
                 ("https://mitm.example/", "blocked.mitm", "AS9198"),
                 ("https://down.example/", "down", "AS9198"),
                 ("https://fine.example/", "outage" if 10 <= i < 13 else "ok", "AS9198"),
                 (EVIL, "blocked.tcp", "AS9198"),
                 ("https://social.example/", "ok", "AS206026"),
                 ("https://news.example/", "blocked.ooni-tcp", "AS206026")]
        if i % 3 == 0:
            sweep.append(("https://rare.example/", "ok", "AS206026"))
        if i == 18:  # a second look in the same sweep, not yet blocked: the bin is blocked
            sweep.append(("https://social.example/", "ok", "AS9198"))
        out += [(_record(url, when, tag, asn), tag) for url, tag, asn in sweep]
    return out


def _expected(plan: list[tuple[dict[str, Any], Tag]]) -> dict[tuple[str, str, str], str]:
    """(input, probe_asn, bin) -> state, by the grid's documented precedence."""
    tags: dict[tuple[str, str, str], list[Tag]] = {}
    for rec, tag in plan:
        ts = datetime.strptime(rec["measurement_start_time"], "%Y-%m-%d %H:%M:%S")
        epoch = int(ts.replace(tzinfo=UTC).timestamp())
        b = datetime.fromtimestamp(epoch - epoch % STEP, UTC).strftime("%Y-%m-%d %H:%M:%S")
        tags.setdefault((rec["input"], rec["probe_asn"], b), []).append(tag)
    out = {}
    for key, seen in tags.items():
        blocked = [t.replace("ooni-", "") for t in seen if t.startswith("blocked")]
        out[key] = (blocked[0] if blocked else "ok" if "ok" in seen
                    else "down" if "down" in seen else "outage")
    return out


async def _write(directory: Path, plan: list[tuple[dict[str, Any], Tag]]) -> None:
    sink = NdjsonSink(OutputConfig(dir=directory, prefix="kz", compress="gzip",
                                   fsync_interval=0.05), probe_id="vps1")
    await sink.start()
    for rec, _ in plan:
        await sink.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
    await sink.aclose()


@pytest.fixture
async def page(tmp_path: Path) -> tuple[Path, list[tuple[dict[str, Any], Tag]]]:
    """The report page over records the writer wrote, and the plan they were written from."""
    now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
    plan = _plan(now - timedelta(minutes=5 * (SWEEPS - 1)))
    await _write(tmp_path / "data", plan)
    out = tmp_path / "report.html"
    out.write_bytes(run(ReportRequest(paths=(tmp_path / "data",), format="html")))
    return out, plan


_PROBE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var d = document.documentElement, gd = document.getElementById("grid");
  var table = document.getElementById("targets-table");
  var heads = Array.from(table.querySelectorAll("th"));
  var blocked = heads.findIndex(function (h) { return h.textContent.indexOf("Blocked") === 0; });
  heads[blocked].click(); heads[blocked].click();  /* descending */
  var out = {scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
    x: gd.data[0].x, y: gd.data[0].y, z: gd.data[0].z,
    resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
    sorted: Array.from(table.tBodies[0].rows).map(function (r) {
      return r.cells[blocked].getAttribute("data-v"); })};
  var pre = document.createElement("pre"); pre.id = "probe-result";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
}, 300); });
</script>"""


def _browse(page: Path, width: int, profile: Path,
            screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The DOM (or a screenshot) at ``width`` px, and the console lines; nothing resolves."""
    action = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},2400",
         "--virtual-time-budget=5000", *action, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


_AXES = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var out = {};
  ["grid", "events", "breakdown"].forEach(function (id) {
    var gd = document.getElementById(id), box = gd.getBoundingClientRect();
    var leg = gd.querySelector(".legend"), lb = leg && leg.getBoundingClientRect();
    var text = function (sel) { return Array.from(gd.querySelectorAll(sel))
      .map(function (t) { return t.textContent; }); };
    out[id] = {x: text(".xtick text"), y: text(".ytick text"),
               legend: lb ? [lb.left - box.left, box.right - lb.right, lb.top - box.top,
                             box.bottom - lb.bottom] : null};
  });
  var pre = document.createElement("pre"); pre.id = "probe-result";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
}, 300); });
</script>"""


def _probed(page: Path, width: int, tmp: Path, script: str = _PROBE) -> dict[str, Any]:
    probe = tmp / f"probe-{width}.html"
    text = page.read_text()
    end = text.rindex("</body>")
    probe.write_text(text[:end] + script + text[end:])
    dom, console = _browse(probe, width, tmp / f"profile-{width}")
    assert console == [], console
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    result: dict[str, Any] = json.loads(found.group(1).replace("&amp;", "&")
                                        .replace("&lt;", "<").replace("&gt;", ">"))
    return result


@pytest.mark.parametrize("width", [1366, 800])
def test_page_fits_the_width_and_the_console_stays_quiet(
        page: tuple[Path, Any], tmp_path: Path, width: int) -> None:
    """No sideways scrolling of the page, no console message, nothing fetched; a screenshot."""
    result = _probed(page[0], width, tmp_path)
    assert result["clientWidth"] == width
    assert result["scrollWidth"] <= result["clientWidth"]
    assert result["resources"] == []
    shot = tmp_path / f"report-{width}.png"
    _, console = _browse(page[0], width, tmp_path / "profile-shot", shot)
    assert console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == width
    if keep := os.environ.get("KZPROBE_SCREENSHOTS"):
        shutil.copy(shot, Path(keep) / shot.name)


def test_grid_cells_match_the_records_written(page: tuple[Path, Any], tmp_path: Path) -> None:
    """Every cell of the grid's data island, and of the figure Chromium drew, is the state
    counted here from the records the writer was given; empty bins are no data."""
    html, plan = page
    text = html.read_text()
    island = json.loads(re.search(r'<script type="application/json" id="grid-data">(.*?)'
                                  r"</script>", text, re.S).group(1))  # type: ignore[union-attr]
    assert island["bin_s"] == STEP and len(island["bins"]) == SWEEPS
    rows = [(r["input"], r["probe_asn"]) for r in island["rows"]]
    got = {(*rows[r], island["bins"][b]): state for r, b, state, *_ in island["cells"]}
    expected = _expected(plan)
    assert got == expected
    blocked_now = {(u, a) for (u, a, _), s in expected.items() if s.startswith("blocked")
                   and u not in ("https://social.example/",)} | {
        ("https://social.example/", "AS9198")}
    assert len(rows) == 10 and set(rows[:6]) == blocked_now  # blocked now first, then down
    assert rows[0] == ("https://social.example/", "AS9198")  # the latest blocked on top
    assert rows[6] == ("https://down.example/", "AS9198")
    drawn = _probed(html, 1366, tmp_path)
    codes = sorted({s for s in expected.values()})
    assert len(drawn["z"]) == len(rows) and len(drawn["x"]) == len(island["bins"])
    filled = sum(v is not None for row in drawn["z"] for v in row)
    assert filled == len(expected) and len(codes) >= 7
    shares = [float(v) for v in drawn["sorted"]]
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.0 and shares[-1] == 0.0


def test_page_links_evidence_and_fetches_nothing(page: tuple[Path, Any]) -> None:
    """Each target links the segment and line of its latest (blocked) record, which holds
    the uid the link names; no attribute points off the machine; injected markup is text."""
    text = re.sub(r'<script type="text/javascript">.*?</script>', "", page[0].read_text(),
                  count=1, flags=re.S)  # plotly.js itself: its own strings name its web site
    links = re.findall(r'<a href="(file://[^"]+)" title="([^",]+):(\d+), x_measurement_uid '
                       r'([0-9a-f]{32})">(.+?)</a>', text)
    assert len(links) == 10
    for uri, name, line, uid, shown in links:
        path = Path(uri.removeprefix("file://"))
        assert path.name == name
        assert shown.replace("<wbr>", "") == f"{name.rsplit('-', 1)[-1]}:{line}"
        with gzip.open(path) as f:
            record = orjson.loads(f.read().splitlines()[int(line) - 1])
        assert record["x_measurement_uid"] == uid
    attributes = re.findall(r'\b(?:src|href|action|data)\s*=\s*"([^"]*)"', text)
    assert attributes and all(a.startswith(("#", "file://")) for a in attributes), attributes
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text)
    assert "url(http" not in text and "@import" not in text
    assert '&quot;&gt;&lt;script&gt;console.error(&quot;injected&quot;)' in text


def test_axes_read_as_times_and_counts(probe: Path, tmp_path: Path) -> None:
    """Three hours of data: time ticks are whole minutes with the date, never fractions
    of a second; a count axis ticks whole numbers; each legend lies inside its figure."""
    page = tmp_path / "report.html"
    page.write_bytes(run(ReportRequest(paths=(probe,), format="html")))
    drawn = _probed(page, 1366, tmp_path, _AXES)
    for name in ("grid", "events"):
        ticks = drawn[name]["x"]
        assert ticks and all(re.fullmatch(r"\d\d:\d\d(Dec \d\d)?", t) for t in ticks), ticks
        assert any(t.endswith("Dec 07") for t in ticks)
    counts = drawn["breakdown"]["y"]
    assert counts == [str(n) for n in range(len(counts))] and len(counts) >= 2, counts
    for name in ("events", "breakdown"):
        assert drawn[name]["legend"] and min(drawn[name]["legend"]) >= 0, drawn[name]
