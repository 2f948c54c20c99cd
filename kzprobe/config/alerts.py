"""The ``[alerts]`` section: confirmation, webhooks (each with its own token), heartbeat."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kzprobe.config.model import AlertsConfig, Webhook
from kzprobe.config.network import _loopback_host
from kzprobe.config.section import MAX_TIMEOUT, Fail, _Section, did_you_mean
from kzprobe.config.tokens import _token
from kzprobe.errors import ConfigError

MAX_URL_CHARS = 2048
MAX_WEBHOOKS = 16
WEBHOOK_FORMATS = ("json", "slack", "matrix", "text")
_WEBHOOK_KEYS = frozenset({"url", "format", "token", "token_file"})


def check_url(fail: Fail, key: str, url: Any) -> str:
    """An absolute http(s) URL with a host, printable and bounded (a POST goes there)."""
    if not isinstance(url, str):
        raise fail(key, f"expected an http(s) URL, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise fail(key, f"not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(key, f"expected an http(s) URL, got {url!r}")
    if len(url) > MAX_URL_CHARS or not url.isprintable() or " " in url:
        raise fail(key, f"a URL must be up to {MAX_URL_CHARS} printable characters "
                        "without spaces")
    return url


def _webhook(s: _Section, base: Path | None, index: int, entry: Any) -> Webhook:
    def fail(key: str, message: str) -> ConfigError:
        return s.fail(("webhooks", index, key), message)

    if not isinstance(entry, dict) or "url" not in entry:
        raise s.fail(("webhooks", index), 'expected {url = "...", format = "json"}')
    unknown = sorted(entry.keys() - _WEBHOOK_KEYS)
    if unknown:
        raise s.fail(("webhooks", index), f"unknown key {unknown[0]!r}"
                                          f"{did_you_mean(unknown[0], _WEBHOOK_KEYS)}")
    url = check_url(fail, "url", entry["url"])
    fmt = entry.get("format", Webhook(url=url).format)
    if fmt not in WEBHOOK_FORMATS:
        raise fail("format", f"must be one of {', '.join(WEBHOOK_FORMATS)}; got {fmt!r}")
    token = _token(fail, base, entry)
    if token is not None and url.startswith("http://") and not _loopback_host(url):
        raise fail("url", f"a token would cross the network in plain http to {url}: "
                          "use https:// (plain http only to a loopback address)")
    return Webhook(url=url, format=fmt, token=token)


def _webhooks(s: _Section, base: Path | None) -> tuple[Webhook, ...]:
    entries = s.get("webhooks", list, [])
    if len(entries) > MAX_WEBHOOKS:
        raise s.fail("webhooks", f"at most {MAX_WEBHOOKS} webhooks, got {len(entries)}")
    return tuple(s.each(entries, lambda index, entry: _webhook(s, base, index, entry)))


def _parse_alerts(s: _Section, base: Path | None) -> AlertsConfig:
    d = AlertsConfig()
    heartbeat = s.string("heartbeat_url", d.heartbeat_url)
    if heartbeat:
        heartbeat = s.checked(lambda: check_url(s.fail, "heartbeat_url", heartbeat),
                              d.heartbeat_url)
    return AlertsConfig(
        confirm=s.integer("confirm", d.confirm, maximum=100),
        webhooks=_webhooks(s, base),
        heartbeat_url=heartbeat,
        group_above=s.integer("group_above", d.group_above, minimum=0, maximum=100_000),
        group_first=s.integer("group_first", d.group_first, maximum=100),
        timeout=s.number("timeout", d.timeout, maximum=MAX_TIMEOUT),
        max_backoff=s.number("max_backoff", d.max_backoff, maximum=MAX_TIMEOUT),
        max_pending=s.integer("max_pending", d.max_pending, maximum=1_000_000),
    )
