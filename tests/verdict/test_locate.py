"""The locator: answer ASNs, resolver ASN, and the probe's detected network in records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kzprobe.config import Config, parse_config
from kzprobe.verdict.locate import Locator
from tests.geoipdb import write_asn_db, write_country_db

ISP, ELSEWHERE, SITE = "198.18.1.2", "198.18.3.2", "198.18.2.10"


@pytest.fixture
def geoip(tmp_path: Path) -> dict[str, str]:
    asn = write_asn_db(tmp_path / "asn.mmdb", {
        "198.18.1.0/24": (64501, "Lab ISP"), "198.18.2.0/24": (64500, "Lab Internet"),
        "198.18.3.0/24": (64503, "Other ISP")})
    cc = write_country_db(tmp_path / "cc.mmdb", {"198.18.1.0/24": "KZ", "198.18.3.0/24": "UZ"})
    return {"asn_db": str(asn), "country_db": str(cc)}


def _config(geoip: dict[str, str], **probe: str) -> Config:
    return parse_config({"geoip": geoip, "probe": probe,
                         "dns": {"resolvers": [ISP]}}).config


def _record(client_ip: str | None, answers: tuple[str, ...] = (SITE,)) -> dict[str, Any]:
    control = {"x_client_ip": client_ip, "dns": {"addrs": [SITE]}} if client_ip else None
    return {"probe_asn": "AS0", "probe_cc": "ZZ", "probe_network_name": "", "resolver_ip": ISP,
            "resolver_asn": "AS0", "resolver_network_name": "",
            "test_keys": {"control": control, "queries": [{"answers": [
                {"answer_type": "A", "ipv4": a, "asn": 0, "as_org_name": ""} for a in answers]
                + [{"answer_type": "CNAME", "hostname": "x.test", "asn": 0}]}]}}


def test_answers_and_resolver_get_asns(geoip: dict[str, str]) -> None:
    record = _record(ISP, answers=(SITE, "203.0.113.9"))
    Locator(_config(geoip)).annotate(record)
    answers = record["test_keys"]["queries"][0]["answers"]
    assert [(a.get("asn"), a.get("as_org_name")) for a in answers] == [
        (64500, "Lab Internet"), (0, ""), (0, None)]
    assert (record["resolver_asn"], record["resolver_network_name"]) == ("AS64501", "Lab ISP")


def test_unset_probe_fields_are_detected_and_kept_for_records_without_control(
        geoip: dict[str, str]) -> None:
    locator = Locator(_config(geoip))
    with capture_logs() as logs:
        first = _record(ISP)
        locator.annotate(first)
        later = _record(None)
        locator.annotate(later)
    for record in (first, later):
        assert (record["probe_asn"], record["probe_cc"], record["probe_network_name"]) == \
            ("AS64501", "KZ", "Lab ISP")
        assert "x_probe_detected" not in record
    located = [e for e in logs if e["event"] == "probe_located"]
    assert len(located) == 1 and located[0]["probe_asn"] == "AS64501"
    assert not any(ISP in str(e) for e in logs)  # the address itself is never logged


def test_a_move_to_another_network_is_noticed(geoip: dict[str, str]) -> None:
    locator = Locator(_config(geoip))
    locator.annotate(_record(ISP))
    with capture_logs() as logs:
        moved = _record(ELSEWHERE)
        locator.annotate(moved)
    assert (moved["probe_asn"], moved["probe_cc"]) == ("AS64503", "UZ")
    assert [e["event"] for e in logs] == ["probe_location_changed"]


def test_configured_values_win_and_a_disagreement_is_a_warning_and_a_field(
        geoip: dict[str, str]) -> None:
    locator = Locator(_config(geoip, asn="AS64501", cc="KZ", network_name="My ISP name"))
    with capture_logs() as logs:
        for _ in range(2):
            record = {**_record(ISP), "probe_asn": "AS64501", "probe_cc": "KZ",
                      "probe_network_name": "My ISP name"}  # as record.py writes them
            locator.annotate(record)
    assert (record["probe_asn"], record["probe_network_name"]) == ("AS64501", "My ISP name")
    assert record["x_probe_detected"] == {"probe_network_name": "Lab ISP"}
    warnings = [e for e in logs if e["event"] == "probe_location_differs"]
    assert len(warnings) == 1 and warnings[0]["configured"] == "My ISP name"


def test_without_a_database_nothing_changes() -> None:
    record = _record(ISP)
    before = repr(record)
    Locator(parse_config({}).config).annotate(record)
    assert repr(record) == before


def test_an_address_the_database_does_not_know_forgets_the_location(
        geoip: dict[str, str]) -> None:
    locator = Locator(_config(geoip))
    locator.annotate(_record(ISP))
    with capture_logs() as logs:
        record = _record("203.0.113.50")
        locator.annotate(record)
    assert record["probe_asn"] == "AS0" and locator.location is None
    assert [e["event"] for e in logs] == ["probe_location_unknown"]


def test_a_country_database_alone_detects_the_country(geoip: dict[str, str]) -> None:
    locator = Locator(_config({"country_db": geoip["country_db"]}, asn="AS64501"))
    record = _record(ISP)
    locator.annotate(record)
    assert (record["probe_cc"], record["probe_asn"]) == ("KZ", "AS0")  # AS0: _record's value
    assert "x_probe_detected" not in record  # no ASN detected: nothing to disagree with


def test_a_reloaded_pipeline_keeps_the_location(geoip: dict[str, str]) -> None:
    """SIGHUP builds a new pipeline: its locator starts from the old one's location, so a
    record measured before the next helper answer is still placed (and nothing re-logged)."""
    old = Locator(_config(geoip))
    old.annotate(_record(ISP))
    new = Locator(_config(geoip))
    new.adopt(old)
    with capture_logs() as logs:
        record = _record(None)
        new.annotate(record)
        new.annotate(_record(ISP))
    assert record["probe_asn"] == "AS64501"
    assert logs == []


def test_control_ip_info_asns_a_helper_did_not_know_come_from_the_probe(
        geoip: dict[str, str]) -> None:
    """A helper without a database answers asn 0; the probe's database fills it in, and an
    ASN the helper did know is kept."""
    record = _record(ISP)
    record["test_keys"]["control"]["ip_info"] = {
        SITE: {"asn": 0, "flags": 3}, ELSEWHERE: {"asn": 65000, "flags": 2},
        "203.0.113.9": {"asn": 0, "flags": 2}}
    Locator(_config(geoip)).annotate(record)
    info = record["test_keys"]["control"]["ip_info"]
    assert (info[SITE]["asn"], info[ELSEWHERE]["asn"], info["203.0.113.9"]["asn"]) == (
        64500, 65000, 0)
