"""``[upload]`` in the config: off by default, https (http to loopback only), errors that
name file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kzprobe.config.model import UploadConfig
from kzprobe.config.parse import check_config_file, parse_config
from kzprobe.errors import ConfigError


def upload(table: dict[str, Any]) -> UploadConfig:
    return parse_config({"upload": table}, where="k.toml").config.upload


def test_off_by_default() -> None:
    assert upload({}) == UploadConfig()
    assert UploadConfig().ooni_collector == ""


def test_values() -> None:
    parsed = upload({"ooni_collector": "https://collector.example/api/", "timeout": 5,
                     "max_backoff": 60, "max_in_flight": 2})
    assert parsed == UploadConfig(ooni_collector="https://collector.example/api", timeout=5.0,
                                  max_backoff=60.0, max_in_flight=2)
    assert upload({"ooni_collector": "http://127.0.0.1:8080"}).ooni_collector \
        == "http://127.0.0.1:8080"


@pytest.mark.parametrize(("table", "message"), [
    ({"ooni_collector": "http://collector.example/"},
     "k.toml: [upload] ooni_collector: records would cross the network in plain http"),
    ({"ooni_collector": "ftp://collector.example/"},
     "k.toml: [upload] ooni_collector: expected an http(s) URL"),
    ({"ooni_collector": "https://collector.example/?x=1"},
     "k.toml: [upload] ooni_collector: expected a base URL without ?query"),
    ({"ooni_collector": 5}, "k.toml: [upload] ooni_collector: expected str"),
    ({"max_in_flight": 0}, "k.toml: [upload] max_in_flight: must be >= 1"),
    ({"max_in_flight": 65}, "k.toml: [upload] max_in_flight: must be <= 64"),
    ({"timeout": 0}, "k.toml: [upload] timeout: must be > 0"),
])
def test_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        upload(table)
    assert str(caught.value).startswith(message), str(caught.value)


def test_check_config_names_the_line(tmp_path: Path) -> None:
    """check-config reports every [upload] problem with its file and line."""
    path = tmp_path / "k.toml"
    path.write_text('[probe]\ncc = "KZ"\n\n[upload]\nmax_in_flight = 2\n'
                    'ooni_collector = "http://collector.example"\ntimeout = -1\n')
    check = check_config_file(path)
    assert check.loaded is None
    assert any(e.startswith(f"{path}:6: [upload] ooni_collector: records would cross")
               for e in check.errors), check.errors
    assert any(e.startswith(f"{path}:7: [upload] timeout:") for e in check.errors), check.errors


def test_unknown_key_is_a_warning() -> None:
    loaded = parse_config({"upload": {"ooni_colector": "https://c.example"}}, where="k.toml")
    assert loaded.config.upload == UploadConfig()
    assert any("ooni_colector" in w and "ooni_collector" in w for w in loaded.warnings)
