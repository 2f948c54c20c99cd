"""A group's body_bytes caps the snapshot of its targets' bodies (a watchlist swept every
minute keeps small snapshots); other targets keep [limits] body_bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from kzprobe.config import parse_config
from kzprobe.engine import build_engine
from kzprobe.targets import parse_target

PAGE = "<html><head><title>Big page</title></head><body>" + "x" * 200_000 + "</body></html>"


@pytest.fixture
async def big_site() -> AsyncIterator[str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


async def test_a_groups_cap_applies_to_its_targets_only(big_site: str) -> None:
    config = parse_config({"analysis": {"not_bogon": ["127.0.0.0/8"], "retries": 0,
                                        "worker_process": False},
                           "output": {"store_bodies": "always"},
                           "service": {"metrics_listen": ""}}).config
    engine = build_engine(config)
    await engine.start()
    try:
        plain = parse_target(big_site)
        watched = dataclasses.replace(plain, group="watch", body_bytes=4096)
        capped = (await engine.measure(watched))["test_keys"]["requests"][0]["response"]
        full = (await engine.measure(plain))["test_keys"]["requests"][0]["response"]
    finally:
        await engine.aclose()
    assert capped["body_is_truncated"] is True and len(capped["body"]) == 4096
    assert full["body_is_truncated"] is False and len(full["body"]) == len(PAGE)
