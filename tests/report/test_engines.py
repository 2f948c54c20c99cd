"""One report definition, two engines: DuckDB and Spark (``local[2]``) agree on every table.

The data are real segments of four probes on three networks (written as the sink leaves
them), read as segments and as the Parquet store ``kzprobe export`` makes of them. Spark
needs a JVM: the test is skipped, with the reason, only when java or pyspark is missing.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kzprobe.report.build import build_report
from kzprobe.report.export import export
from kzprobe.report.model import Report, ReportError, Window
from tests.report.builders import endpoint, lines, target_event, web, write
from tests.report.conftest import in_outage

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or importlib.util.find_spec("pyspark") is None,
    reason="--engine spark needs java (openjdk-17-jre-headless) and pyspark (kzprobe[spark])")

# probe id, network, how many hours it wrote (vps4 fell silent early: its age shows it)
PROBES = (("vps1", "AS9198", 30), ("vps2", "AS9198", 30), ("vps3", "AS21299", 30),
          ("vps4", "AS206026", 12))
URLS = [f"https://site{i}.kz/" for i in range(12)] + ["openvpn://vpn.example:1194/"]
CATEGORIES = ("NEWS", "GRP", "POLR", "ANON", None)
START = datetime(2024, 3, 1)


def _record(rng: random.Random, url: str, when: str, asn: str, probe: str,
            index: int) -> dict[str, Any]:
    """A record whose verdict depends on the network and, for some targets, the hour."""
    blocked_here = (index % 3 == 0 and asn != "AS206026") or (index % 4 == 1 and asn == "AS9198")
    if index == 5 and when[11:13] >= "12":  # blocked from noon: a change event
        blocked_here = True
    if url.startswith("openvpn"):
        record = endpoint(url, when, asn=asn, reachable=not blocked_here,
                          interference=["openvpn.handshake_timeout"] if blocked_here else [])
    elif blocked_here:
        codes = rng.choice((["tls.timeout"], ["dns.nxdomain"], ["tls.reset", "tls.timeout"]))
        record = web(url, when, asn=asn, category=CATEGORIES[index % 5],
                     blocking=rng.choice(("http-failure", "dns", "tcp_ip")), accessible=False,
                     interference=codes if index % 2 else [],
                     blockpage="cp.d_corp_kz_ps" if index == 6 else None,
                     mitm="Security Certificate" if codes == ["tls.reset"] else None)
    else:
        record = web(url, when, asn=asn, category=CATEGORIES[index % 5],
                     blocking=False if index != 7 else None,
                     accessible=True if index != 8 else rng.choice((True, False)))
    record["annotations"]["kzprobe_probe_id"] = probe
    return in_outage(record) if when[11:13] == "03" and asn == "AS21299" else record


def _write_probe(root: Path, probe: str, asn: str, hours: int, rng: random.Random) -> None:
    out = root / probe
    for day in range(0, hours, 24):
        records = []
        for hour in range(day, min(day + 24, hours)):
            when = START + timedelta(hours=hour, minutes=rng.randrange(60))
            for index, url in enumerate(URLS):
                stamp = (when + timedelta(seconds=index)).strftime("%Y-%m-%d %H:%M:%S")
                records.append(_record(rng, url, stamp, asn, probe, index))
        stamp = (START + timedelta(hours=day)).strftime("%Y%m%dT%H%M%SZ")
        corrupt = probe == "vps1" and day == 0  # one bad line: listed, not counted
        data = lines(records) + (b'{"input": "https://torn.kz/", "meas\n' if corrupt else b"")
        last = hours - day <= 24 and probe == "vps3"  # vps3's newest segment is still open
        suffix = ".ndjson.part" if last else ".ndjson.gz"
        write(out / f"kz-{stamp}-{probe}-100-{day // 24 + 1:06d}{suffix}", data)
    events = [target_event("blocked", URLS[5], "2024-03-01T12:10:00Z",
                           to=("blocked", ["tls.timeout"]), asn=asn, probe_id=probe)]
    write(out / "events-20240301.ndjson", lines(events))


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each probe's output directory, as it would be copied off its VPS."""
    root = tmp_path_factory.mktemp("fleet")
    rng = random.Random(21)
    for probe, asn, hours in PROBES:
        _write_probe(root, probe, asn, hours, rng)
    return sorted(p for p in root.iterdir())


@pytest.fixture(scope="module")
def store(probes: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("store") / "store"
    result = export(probes, directory)
    assert result.exported == 6 and result.open_segments == 1
    return directory


def _tables(report: Report) -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    return {t.name: (t.columns, [tuple(_norm(v) for v in row) for row in t.rows])
            for t in report.tables}


def _norm(value: Any) -> Any:
    """Floats as the report rounds them; the rest as it is (types must match)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _both(paths: list[Path], window: Window | None = None) -> tuple[Report, Report]:
    return (build_report(paths, window, heatmap=True),
            build_report(paths, window, heatmap=True, engine="spark"))


@pytest.fixture(scope="module")
def on_segments(probes: list[Path], spark_session: Any) -> tuple[Report, Report]:
    return _both(probes)


@pytest.fixture(scope="module")
def on_store(store: Path, spark_session: Any) -> tuple[Report, Report]:
    return _both([store], Window(since=datetime(2024, 3, 1, 2)))


def _assert_agree(duck: Report, spark: Report) -> None:
    """Every table, the HTML status grid's included, and the summary, to the value."""
    expected, got = _tables(duck), _tables(spark)
    assert "grid" in expected and expected["grid"][1]
    assert list(got) == list(expected)
    for name in expected:
        assert got[name] == expected[name], name
    assert "grid_bin_s" in duck.summary
    assert spark.summary == duck.summary
    assert spark.stats == duck.stats


@pytest.mark.timeout(900)  # Spark's JVM start and first plans, on a loaded 2-core machine
def test_both_engines_agree_on_segments(on_segments: tuple[Report, Report]) -> None:
    """Gzip segments, a live .part and a corrupt line: DuckDB scans; both compute."""
    _assert_agree(*on_segments)
    report = on_segments[0]
    assert report.summary["networks"] == 3
    assert report.stats.corrupt_lines == 1 and report.stats.open_segments == 1
    assert {r["to_state"] for r in report.table("changes").records()} == {"blocked",
                                                                           "accessible"}


@pytest.mark.timeout(900)
def test_both_engines_agree_on_the_store(on_store: tuple[Report, Report]) -> None:
    """The store read by DuckDB (read_parquet) and by Spark (spark.read.parquet)."""
    _assert_agree(*on_store)
    report = on_store[0]
    assert report.stats.records == report.summary["records"] > 0
    assert len(report.table("events").rows) == len(PROBES)


@pytest.mark.timeout(900)
def test_fleet_views(on_store: tuple[Report, Report]) -> None:
    """Who sees a target blocked, since when; which probe went silent."""
    report = on_store[1]
    compare = {r["input"]: r for r in report.table("network_compare").records()}
    site0 = compare[URLS[0]]
    assert site0["blocked_networks"] == 2
    assert site0["open_on"] == ["AS206026 Kcell JSC"]
    assert [n.split(" since ")[0] for n in site0["blocked_on"]] == [
        "AS21299", "AS9198 JSC Kazakhtelecom"]
    probes = {r["probe_id"]: r for r in report.table("probes").records()}
    assert set(probes) == {p for p, _, _ in PROBES}
    assert probes["vps4"]["probe_asn"] == "AS206026"
    assert probes["vps4"]["silent_hours"] > 17 > probes["vps1"]["silent_hours"]
    assert report.table("probes").rows[0][0] == "vps4"  # the silent one first


def test_a_store_is_read_alone(store: Path, probes: list[Path]) -> None:
    with pytest.raises(ReportError, match="read alone"):
        build_report([store, probes[0]])


def test_an_exact_tie_rounds_alike_on_both_engines(spark_session: Any) -> None:
    """387360 / 1152000 = 0.33625 exactly: a 10 M-record report once said 0.3362 on DuckDB
    and 0.3363 on Spark (which rounds the double's decimal text)."""
    import duckdb

    from kzprobe.report.dialect import to_spark
    from kzprobe.report.sql import ratio4

    text = f"SELECT {ratio4('387360', '1152000')} AS a, {ratio4('1', '3')} AS b, " \
           f"{ratio4('1', '0')} AS c"
    duck = duckdb.sql(text).fetchall()
    spark = [tuple(row) for row in spark_session.sql(to_spark(text)).collect()]
    assert duck == spark == [(0.3363, 0.3333, None)]
