"""The ``[control]`` section: the helpers to ask, each with its own token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kzprobe.config.model import ControlConfig, ControlHelper
from kzprobe.config.network import _loopback_host
from kzprobe.config.section import Fail, _Section, did_you_mean
from kzprobe.config.tokens import _check_token, _token
from kzprobe.errors import ConfigError

_HELPER_KEYS = frozenset({"url", "token", "token_file"})


def _control_helper(fail: Fail, url: Any, token: str | None) -> ControlHelper:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise fail("url", f"expected an http(s) URL, got {url!r}")
    if token is not None and url.startswith("http://") and not _loopback_host(url):
        raise fail("url", f"a token would cross the network in plain http to {url}: "
                          "use https:// (plain http only to a loopback address)")
    return ControlHelper(url=url, token=token)


def _helper_entry(s: _Section, base: Path | None, index: int, entry: Any) -> ControlHelper:
    def fail(key: str, message: str) -> ConfigError:
        return s.fail(("helpers", index, key), message)

    if not isinstance(entry, dict) or "url" not in entry:
        raise s.fail(("helpers", index), 'expected {url = "...", token = "..." '
                                         'or token_file = "..."}')
    unknown = sorted(entry.keys() - _HELPER_KEYS)
    if unknown:
        raise s.fail(("helpers", index), f"unknown key {unknown[0]!r}"
                                         f"{did_you_mean(unknown[0], _HELPER_KEYS)}")
    return _control_helper(fail, entry["url"], _token(fail, base, entry))


def _helper_entries(s: _Section, base: Path | None) -> list[ControlHelper]:
    return s.each(s.get("helpers", list, []),
                  lambda index, entry: _helper_entry(s, base, index, entry))


def _parse_control(s: _Section, base: Path | None) -> ControlConfig:
    """``helpers`` (one token per URL), or the older ``helper_url`` + ``helper_token``:
    a single helper_token is only unambiguous with a single helper_url."""
    d = ControlConfig()
    helpers = _helper_entries(s, base)
    urls = s.strings("helper_url", ())
    token = s.string("helper_token", None)
    if helpers and (urls or token is not None):
        raise s.fail("helpers", "helpers or helper_url/helper_token, not both")
    if token is not None and len(urls) != 1 and not s.failed("helper_url"):
        raise s.fail("helper_token", "helper_token goes with exactly one helper_url; "
                                     "for several, give each its own token in helpers")
    if token is not None:
        token = _check_token(lambda _, message: s.fail("helper_token", message), "", token)
    helpers = helpers or [_control_helper(lambda _, message: s.fail("helper_url", message),
                                          url, token) for url in urls]
    return ControlConfig(helpers=tuple(helpers),
                         concurrency=s.integer("concurrency", d.concurrency))
