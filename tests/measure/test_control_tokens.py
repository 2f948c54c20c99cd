"""One token per control helper: each helper gets its own token, none goes over plain http
to a non-loopback host, and a control request never follows a redirect (real loopback apps)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kzprobe.config import Config, parse_config
from kzprobe.errors import ConfigError
from kzprobe.measure.resources import control_client


@dataclass
class Recorder:
    """A helper-shaped app on 127.0.0.1 that records the Authorization header of each POST."""

    status: int = 200
    location: str | None = None
    seen: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.get("Authorization"))
        if self.location is not None:
            raise web.HTTPTemporaryRedirect(self.location)
        return web.json_response({"tcp_connect": {}}, status=self.status)


StartRecorder = Callable[..., Awaitable[Recorder]]


@pytest.fixture
async def recorder() -> AsyncIterator[StartRecorder]:
    runners: list[web.AppRunner] = []

    async def start(**kwargs: Any) -> Recorder:
        rec = Recorder(**kwargs)
        app = web.Application()
        app.router.add_post("/", rec.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        return rec

    yield start
    for runner in runners:
        await runner.cleanup()


def _config(control: dict[str, Any], base: Path | None = None) -> Config:
    return parse_config({"control": control}, base=base).config


async def _query(config: Config) -> tuple[str | None, str | None]:
    client = control_client(config)
    assert client is not None
    try:
        result = await client.query("https://site.test/", ["127.0.0.1:443"])
    finally:
        await client.aclose()
    return result.helper_url, result.failure


async def test_each_helper_gets_only_its_own_token(recorder: StartRecorder) -> None:
    """Failover through three helpers: each sees its own token, the tokenless one sees none."""
    first, second, third = (await recorder(status=503), await recorder(status=503),
                            await recorder())
    config = _config({"helpers": [{"url": first.url, "token": "alpha"},
                                  {"url": second.url, "token": "beta"},
                                  {"url": third.url}]})
    assert await _query(config) == (third.url, None)
    assert first.seen == ["Bearer alpha"]
    assert second.seen == ["Bearer beta"]
    assert third.seen == [None]


async def test_legacy_helper_token_goes_to_its_single_helper_url(
        recorder: StartRecorder) -> None:
    """helper_url + helper_token (one URL) still works: the token goes to that helper."""
    only = await recorder()
    config = _config({"helper_url": [only.url], "helper_token": "alpha"})
    assert await _query(config) == (only.url, None)
    assert only.seen == ["Bearer alpha"]


async def test_token_file_is_read_at_the_config_edge(recorder: StartRecorder,
                                                     tmp_path: Path) -> None:
    """token_file (e.g. a systemd credential): its first line, relative to the config."""
    only = await recorder()
    (tmp_path / "th.token").write_text("from-a-file\n")
    config = _config({"helpers": [{"url": only.url, "token_file": "th.token"}]}, tmp_path)
    assert await _query(config) == (only.url, None)
    assert only.seen == ["Bearer from-a-file"]


async def test_a_redirect_is_not_followed(recorder: StartRecorder) -> None:
    """A helper answering 307 elsewhere is a failed control; the other server gets nothing."""
    elsewhere = await recorder()
    redirecting = await recorder(location=elsewhere.url)
    config = _config({"helpers": [{"url": redirecting.url, "token": "alpha"}]})
    assert await _query(config) == (None, "http_request_failed")
    assert redirecting.seen == ["Bearer alpha"]
    assert elsewhere.seen == []


@pytest.mark.parametrize(("control", "message"), [
    ({"helper_url": ["https://a.example/", "https://b.example/"], "helper_token": "t"},
     "helper_token goes with exactly one helper_url"),
    ({"helper_url": ["http://th.example/"], "helper_token": "t"}, "plain http"),
    ({"helpers": [{"url": "http://th.example/", "token": "t"}]}, "plain http"),
    ({"helpers": [{"url": "http://10.0.0.1:80/", "token": "t"}]}, "plain http"),
    ({"helpers": [{"url": "https://a.example/", "token": "t", "token_file": "f"}]},
     "not both"),
    ({"helpers": [{"url": "https://a.example/", "token": "a b"}]}, "token"),
    ({"helpers": [{"url": "https://a.example/", "token": "a\nb"}]}, "token"),
    ({"helpers": [{"url": "https://a.example/", "tokn": "t"}]}, "unknown key"),
    ({"helpers": ["https://a.example/"]}, "expected"),
    ({"helpers": [{"url": "ftp://a.example/"}]}, "http(s) URL"),
    ({"helpers": [{"url": "https://a.example/"}], "helper_url": ["https://b.example/"]},
     "not both"),
])
def test_unsafe_or_ambiguous_tokens_are_config_errors(control: dict[str, Any],
                                                      message: str) -> None:
    """A token that could reach the wrong helper, or travel in clear, is refused at load."""
    with pytest.raises(ConfigError, match="control") as info:
        _config(control)
    assert message in str(info.value)


@pytest.mark.parametrize("url", ["https://th.example/", "http://127.0.0.1:8765/",
                                 "http://127.9.9.9/", "http://[::1]:8765/",
                                 "http://localhost:8765/"])
def test_tokens_over_https_or_to_loopback_are_accepted(url: str) -> None:
    config = _config({"helpers": [{"url": url, "token": "t0k-EN_.~+/="}]})
    assert [(h.url, h.token) for h in config.control.helpers] == [(url, "t0k-EN_.~+/=")]
    assert config.control.helper_urls == (url,)


def test_bad_token_files_are_config_errors(tmp_path: Path) -> None:
    """Missing, empty, oversized or non-regular token files are one-line config errors."""
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "huge").write_text("x" * 100_000)
    os.mkfifo(tmp_path / "fifo")  # must not block the config read
    for name, message in (("missing", "no such file"), ("empty", "empty"), ("huge", "larger"),
                          ("fifo", "not a regular file")):
        with pytest.raises(ConfigError, match=message):
            _config({"helpers": [{"url": "https://a.example/", "token_file": name}]}, tmp_path)


def test_helper_token_file(tmp_path: Path) -> None:
    """[helper] token_file sets the helper's token (for LoadCredential=); not with token."""
    (tmp_path / "token").write_text("s3cret\n")
    config = parse_config({"helper": {"token_file": "token"}}, base=tmp_path).config
    assert config.helper.token == "s3cret"
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"helper": {"token_file": "token", "token": "x"}}, base=tmp_path)
