"""``[alerts]`` in the config: defaults, webhooks with tokens, one-line errors naming keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kzprobe.config.model import AlertsConfig, Webhook
from kzprobe.config.parse import parse_config
from kzprobe.errors import ConfigError


def alerts(table: dict[str, Any], base: Path | None = None) -> AlertsConfig:
    return parse_config({"alerts": table}, where="k.toml", base=base).config.alerts


def test_defaults() -> None:
    """No [alerts]: confirm 2, no webhook, no heartbeat."""
    assert alerts({}) == AlertsConfig()
    assert AlertsConfig().confirm == 2 and AlertsConfig().webhooks == ()


def test_webhooks_with_tokens(tmp_path: Path) -> None:
    """Each webhook keeps its format and its own token (inline or from a file)."""
    (tmp_path / "token").write_text("from-file\n")
    parsed = alerts({"webhooks": [
        {"url": "https://hooks.example/a", "format": "slack", "token": "inline"},
        {"url": "https://hooks.example/b", "token_file": "token"},
        {"url": "http://127.0.0.1:9/c", "format": "text"}],
        "heartbeat_url": "https://hc.example/ping", "confirm": 3}, base=tmp_path)
    assert parsed.webhooks == (
        Webhook(url="https://hooks.example/a", format="slack", token="inline"),
        Webhook(url="https://hooks.example/b", format="json", token="from-file"),
        Webhook(url="http://127.0.0.1:9/c", format="text"))
    assert parsed.confirm == 3 and parsed.heartbeat_url == "https://hc.example/ping"
    assert "inline" not in repr(parsed)


@pytest.mark.parametrize(("table", "message"), [
    ({"confirm": 0}, "[alerts] confirm: must be >= 1"),
    ({"webhooks": [{"url": "ftp://x.example/"}]}, "[alerts] webhooks[1] url:"),
    ({"webhooks": [{"url": "https://x.example/", "format": "xml"}]},
     "[alerts] webhooks[1] format: must be one of json, slack, matrix, text"),
    ({"webhooks": [{"url": "https://x.example/", "method": "PUT"}]},
     "[alerts] webhooks[1]: unknown key 'method'"),
    ({"webhooks": ["https://x.example/"]}, "[alerts] webhooks[1]: expected"),
    ({"webhooks": [{"url": "http://x.example/", "token": "t"}]},
     "[alerts] webhooks[1] url: a token would cross the network in plain http"),
    ({"webhooks": [{"url": "https://x.example/", "token": "t", "token_file": "f"}]},
     "[alerts] webhooks[1] token_file: token or token_file, not both"),
    ({"heartbeat_url": "hc.example/ping"}, "[alerts] heartbeat_url: expected an http(s) URL"),
    ({"heartbeat_url": "https://hc.example:99999/"}, "[alerts] heartbeat_url: not a valid URL"),
    ({"timeout": 0}, "[alerts] timeout: must be > 0"),
    ({"group_first": 1000}, "[alerts] group_first: must be <= 100"),
])
def test_errors_are_one_line_and_name_the_key(table: dict[str, Any], message: str) -> None:
    """Bad values are ConfigErrors of one line naming the file, [alerts] and the key."""
    with pytest.raises(ConfigError) as caught:
        alerts(table)
    text = str(caught.value)
    assert text.startswith("k.toml: ") and message in text and "\n" not in text


def test_unknown_alerts_key_is_a_warning() -> None:
    """An unknown key of [alerts] itself is reported like any other section's."""
    loaded = parse_config({"alerts": {"confrim": 2}}, where="k.toml")
    assert loaded.warnings == ("k.toml: [alerts] unknown key 'confrim'; did you mean 'confirm'?",)
