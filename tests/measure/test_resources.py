"""The measuring resources: built from a config alone, with the helper's overrides, and
without anything of the verdict side (the internet-facing helper loads no fingerprints)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

from kzprobe.config import Config
from kzprobe.helper import Helper
from kzprobe.measure.resources import Resources, build_resources, control_client


def test_building_resources_imports_nothing_of_the_verdict_side() -> None:
    """In a fresh interpreter, building and closing Resources imports no analysis module:
    no fingerprints are read, no Analyzer can have been built."""
    script = textwrap.dedent("""
        import asyncio, sys
        from kzprobe.config import parse_config
        from kzprobe.measure.resources import build_resources

        async def main():
            resources = build_resources(parse_config({}).config, per_host=2)
            await resources.aclose()

        asyncio.run(main())
        print(" ".join(sorted(m for m in sys.modules if m.startswith("kzprobe"))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    modules = set(done.stdout.split())
    assert "kzprobe.measure.resources" in modules
    assert "kzprobe.verdict.analysis.fingerprints" not in modules
    assert not {m for m in modules if m.startswith("kzprobe.verdict")}, modules


async def test_overrides_reach_the_context(config_factory: Callable[..., Config]) -> None:
    """The helper's dial policy, source address and per-destination limit are arguments."""
    config = config_factory(limits={"per_host": 3})

    def nowhere(ip: str) -> bool:
        return False

    resources = build_resources(config, may_dial=nowhere, source_address="127.0.0.1",
                                per_host=7)
    try:
        ctx = resources.context
        assert ctx.may_dial is nowhere and ctx.source_address == "127.0.0.1"
        assert ctx.host_limiter.per_host == 7 and resources.config is config
        assert ctx.session._retry_connection is False  # a reset is recorded, not retried
        assert ctx.control is None and control_client(config) is None
    finally:
        await resources.aclose()
    assert ctx.session.closed
    plain = build_resources(config)
    try:
        assert plain.context.host_limiter.per_host == 3 and plain.context.may_dial is None
    finally:
        await plain.aclose()


async def test_the_helper_measures_with_resources_only(
        config_factory: Callable[..., Config]) -> None:
    """The helper's measuring side is Resources: no analyzer, no scrubber, no worker."""
    helper = Helper(config_factory())
    try:
        assert isinstance(helper.resources, Resources)
    finally:
        await helper.aclose()
