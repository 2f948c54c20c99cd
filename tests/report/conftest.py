"""A fleet of two probes on two networks, with every kind of file and damage a report meets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.report.builders import endpoint, lines, network_event, target_event, web, write

TWITTER, NEWS, MECH = "https://twitter.com/", "https://news.kz/", "https://mech.kz/"
BLOCKPAGE, OONI_ONLY, DOWN = "http://blocked.kz/", "https://ooni-only.kz/", "https://down.kz/"
VPN = "openvpn://vpn.example:1194/"
SEGMENT = "kz-20261207T000000Z-vps1-100-000001.ndjson"
EVENTS = "events-20261207.ndjson"


def _probe_a_day1() -> list[dict[str, object]]:
    """AS9198, 2024-03-01: twitter flips to blocked at 02:00, mech changes mechanism."""
    out: list[dict[str, object]] = []
    for hour in ("00", "01", "02"):
        when = f"2024-03-01 {hour}:00:00"
        if hour == "02":
            out.append(web(TWITTER, when, category="GRP", blocking="http-failure",
                           accessible=False, interference=["tls.timeout"]))
        else:
            out.append(web(TWITTER, when, category="GRP"))
        out.append(web(NEWS, when, blocking="dns", accessible=False,
                       interference=["dns.nxdomain"]))
        mechanism = "tls.timeout" if hour == "02" else "tls.reset"
        out.append(web(MECH, when, category="ANON", blocking="http-failure", accessible=False,
                       interference=[mechanism]))
        if hour == "00":
            out.append(web(BLOCKPAGE, when, category="POLR", interference=["http.blockpage"],
                           blockpage="cp.d_corp_kz_ps"))
    return out


def _probe_a_day2() -> list[dict[str, object]]:
    """AS9198, 2024-03-02: news comes back, a site is down, the VPN endpoint recovers."""
    return [
        web(TWITTER, "2024-03-02 00:00:00", category="GRP", blocking="http-failure",
            accessible=False, interference=["tls.timeout"]),
        web(NEWS, "2024-03-02 00:00:00"),
        web(DOWN, "2024-03-02 00:00:00", category="MISC", accessible=False),
        endpoint(VPN, "2024-03-02 00:00:00", reachable=False,
                 interference=["openvpn.handshake_timeout"]),
        web(OONI_ONLY, "2024-03-02 01:00:00", category="HUMR", blocking="tcp_ip",
            accessible=False),
        endpoint(VPN, "2024-03-02 01:00:00", reachable=True),
    ]


def _probe_a_live() -> bytes:
    """AS9198, the open segment: one whole sweep and a record torn mid-write."""
    whole = lines([
        web(TWITTER, "2024-03-03 00:00:00", category="GRP", blocking="http-failure",
            accessible=False, interference=["tls.timeout"]),
        web(NEWS, "2024-03-03 00:00:00", blocking=None, accessible=None),
    ])
    torn = orjson.dumps(web(TWITTER, "2024-03-03 01:00:00", category="GRP"))
    return whole + torn[: len(torn) // 2]


def _probe_b() -> bytes:
    """AS206026 (plain, closed): interception all along; three corrupt lines and a blank one."""
    def mitm(when: str) -> dict[str, object]:
        return web(TWITTER, when, asn="AS206026", category="GRP", blocking="http-failure",
                   accessible=False, interference=["tls.mitm"], mitm="Security Certificate")

    return lines([
        mitm("2024-03-01 00:30:00"), mitm("2024-03-01 01:30:00"),
        b'{"input": "https://broken.kz/", "measurement_',
        web(NEWS, "2024-03-01 02:30:00", asn="AS206026"),
        b"[1, 2]",
        b"",
        b'{"input": "https://no-time.kz/"}',
        mitm("2024-03-01 03:30:00"),
    ])


@pytest.fixture
def fleet(tmp_path: Path) -> list[Path]:
    """Two data directories (one per probe) holding gzip, zstd, plain and a live .part."""
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    write(a / "kz-20240301T000000Z-vps1-100-000001.ndjson.gz", lines(_probe_a_day1()))
    write(a / "kz-20240302T000000Z-vps1-100-000002.ndjson.zst", lines(_probe_a_day2()))
    write(a / "kz-20240303T000000Z-vps1-100-000003.ndjson.part", _probe_a_live())
    write(b / "kz-20240301T000000Z-vps2-200-000001.ndjson", _probe_b())
    return [a, b]


def in_outage(record: dict[str, Any], state: str = "international_outage") -> dict[str, Any]:
    """The record as measured during an outage (issue 17: x_network_state, x_outage)."""
    return record | {"x_network_state": state, "x_network_check": "chk-1", "x_outage": True}


def outage_records() -> list[dict[str, Any]]:
    """twitter on AS9198: ok, blocked, two records inside an outage, blocked again."""
    return [
        web(TWITTER, "2026-12-07 13:00:00", category="GRP"),
        web(TWITTER, "2026-12-07 14:05:00", category="GRP", blocking="http-failure",
            accessible=False, interference=["tls.timeout"]),
        in_outage(web(TWITTER, "2026-12-07 15:00:00", category="GRP", blocking=None,
                    accessible=None)),
        in_outage(web(TWITTER, "2026-12-07 15:30:00", category="GRP",
                    interference=["http.blockpage"], blockpage="cp.d_corp_kz_ps")),
        web(TWITTER, "2026-12-07 16:00:00", category="GRP", blocking="http-failure",
            accessible=False, interference=["tls.timeout"]),
    ]


def outage_events() -> list[dict[str, Any]]:
    """Six events of one probe: target changes around an outage, then a degraded network."""
    return [
        target_event("blocked", TWITTER, "2026-12-07T14:05:00Z", to=("blocked", ["tls.timeout"]),
                     seq=1, sni_blocking_confirmed=True, x_future_key={"nested": 1}),
        network_event("outage", "2026-12-07T15:00:00Z", frm="online",
                      to="international_outage", seq=2),
        network_event("recovered", "2026-12-07T15:45:00Z", frm="international_outage",
                      to="online", seq=3),
        target_event("unblocked", TWITTER, "2026-12-07T16:30:00Z", frm=("blocked", ["tls.timeout"]),
                     to=("ok", []), seq=4),
        target_event("mechanism_changed", MECH, "2026-12-07T17:00:00+00:00",
                     frm=("blocked", ["tls.timeout"]), to=("blocked", ["tls.mitm"]), seq=5,
                     group="default"),
        network_event("degraded", "2026-12-07T18:00:00Z", frm="online", to="degraded", seq=6),
    ]


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """One output directory: a segment and the day's event log, its last line torn mid-write."""
    out = tmp_path / "probe"
    write(out / SEGMENT, lines(outage_records()))
    torn = orjson.dumps(network_event("outage", "2026-12-07T19:00:00Z", frm="degraded",
                                      to="full_outage", seq=7))
    write(out / EVENTS, lines(outage_events()) + torn[: len(torn) // 2])
    return out


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One JVM for the whole test session (``local[2]``, two shuffle partitions, no UI):
    Spark's start-up is seconds, paid once; every ``--engine spark`` report reuses it."""
    from kzprobe.report import spark

    session = spark.session(spark.LOCAL_MASTER)
    yield session
    session.stop()
