"""The MaxMind DB reader and ``[geoip]``: lookups, refreshes, and bad files as config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kzprobe.config import ConfigError, GeoipConfig, parse_config
from kzprobe.geoip import AsInfo, GeoIP, open_geoip
from tests.geoipdb import DEMO_ASNS, DEMO_DB, write_asn_db, write_country_db

NETS = {"198.18.1.0/24": (64501, "Lab ISP"), "198.18.2.0/24": (64500, "Lab Internet"),
        "2001:db8::/32": (64502, "Lab v6")}


@pytest.fixture
def asn_db(tmp_path: Path) -> Path:
    return write_asn_db(tmp_path / "asn.mmdb", NETS)


def test_lookups_give_asn_org_and_country(asn_db: Path, tmp_path: Path) -> None:
    country = write_country_db(tmp_path / "cc.mmdb", {"198.18.1.0/24": "kz"})
    geo = GeoIP(GeoipConfig(asn_db=asn_db, country_db=country))
    assert geo.asn("198.18.1.7") == AsInfo(64501, "Lab ISP")
    assert geo.asn("198.18.1.7").label == "AS64501"  # type: ignore[union-attr]
    assert geo.asn("2001:db8::5") == AsInfo(64502, "Lab v6")
    assert geo.asn("::ffff:198.18.2.9") == AsInfo(64500, "Lab Internet")
    assert geo.country("198.18.1.7") == "KZ"
    assert geo.country("198.18.2.9") is None
    for unknown in ("203.0.113.1", "not an address", ""):
        assert geo.asn(unknown) is None
    geo.close()


def test_no_database_configured_is_none() -> None:
    assert open_geoip(GeoipConfig()) is None


def test_a_replaced_file_is_reopened_after_the_recheck_interval(asn_db: Path,
                                                                tmp_path: Path) -> None:
    now = [0.0]
    geo = GeoIP(GeoipConfig(asn_db=asn_db, recheck_interval=60.0), clock=lambda: now[0])
    fresh = write_asn_db(tmp_path / "new.mmdb", {"198.18.1.0/24": (65000, "Renamed ISP")})
    os.replace(fresh, asn_db)  # what a refresh job does
    assert geo.asn("198.18.1.7") == AsInfo(64501, "Lab ISP")  # not looked at yet
    now[0] = 61.0
    assert geo.asn("198.18.1.7") == AsInfo(65000, "Renamed ISP")
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    os.replace(broken, asn_db)
    now[0] = 200.0
    assert geo.asn("198.18.1.7") == AsInfo(65000, "Renamed ISP")  # the old mapping is kept
    geo.close()


def _config(**geoip: object) -> GeoipConfig:
    return parse_config({"geoip": geoip}, where="kz.toml").config.geoip


def test_config_opens_the_files(asn_db: Path) -> None:
    assert _config(asn_db=str(asn_db)).asn_db == asn_db
    assert _config().asn_db is None


@pytest.mark.parametrize("content", [None, b"", b"garbage" * 100, "dir"])
def test_a_missing_or_unreadable_file_is_one_config_error(tmp_path: Path,
                                                          content: bytes | str | None) -> None:
    path = tmp_path / "asn.mmdb"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        _config(asn_db=str(path))
    message = str(err.value)
    assert message.startswith("kz.toml: [geoip] asn_db: ") and str(path) in message
    assert "\n" not in message


def test_a_database_of_another_kind_is_a_warning(tmp_path: Path) -> None:
    country = write_country_db(tmp_path / "cc.mmdb", {"198.18.1.0/24": "KZ"})
    loaded = parse_config({"geoip": {"asn_db": str(country)}}, where="kz.toml")
    assert any("[geoip] asn_db" in w and "ASN" in w for w in loaded.warnings)


def test_recheck_interval_is_bounded() -> None:
    with pytest.raises(ConfigError, match="recheck_interval"):
        _config(recheck_interval=0)


def test_the_committed_demo_database_matches_its_generator() -> None:
    geo = GeoIP(GeoipConfig(asn_db=DEMO_DB))
    for cidr, (asn, org) in DEMO_ASNS.items():
        assert geo.asn(cidr.split("/")[0]) == AsInfo(asn, org), cidr
    assert geo.asn("127.0.0.100") is None  # the demo ISP's forged answer stays unknown
    geo.close()


@pytest.mark.parametrize("module", ["kzprobe.geoip", "kzprobe.config.geoip",
                                    "kzprobe.verdict.locate"])
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """The config parser imports the reader: the reader must not need kzprobe.config at
    import time (the static import-graph rule does not see a package __init__ cycle)."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
