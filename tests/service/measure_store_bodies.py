"""Measure bytes per record with ``output.store_bodies`` = always / anomalous / never.

Two workloads, each swept through the real daemon once per mode, with a kzprobe control
helper (so plainly fine sites get the verdict that lets ``anomalous`` drop bodies):

* ``pages``: an uncensored site whose pages are 8, 30, 80 and 200 KB of distinct text
  (slices of the Python standard library's source, for realistic entropy), the common
  case on a long run;
* ``demo``: ``kzprobe demo``'s simulated censored network (small pages, many blockings).

Prints uncompressed and gzip bytes per record. Loopback only.

    .venv/bin/python -m tests.service.measure_store_bodies [SWEEPS]
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

from aiohttp import web

from kzprobe.config import parse_config
from kzprobe.demo import DemoNetwork
from kzprobe.helper import start_helper
from kzprobe.ops.logging import configure_logging
from kzprobe.service import Daemon
from kzprobe.targets import parse_target


def _gzip_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.glob("*.ndjson.gz"))


async def _sweep(network: DemoNetwork, helper_url: str, mode: str, out: Path,
                 sweeps: int) -> tuple[int, int, int]:
    data = tomllib.loads(network.config_toml(out, helper_url=helper_url))
    data["output"].update(store_bodies=mode, compress="gzip")
    config = parse_config(data, where=f"demo/{mode}").config
    targets = [parse_target(t.url, origin="demo") for t in network.targets] * sweeps
    daemon = Daemon(config, targets)
    await daemon.serve(once=True)
    on_disk = await asyncio.to_thread(_gzip_bytes, out)
    return daemon.sink.stats.records_written, daemon.sink.stats.bytes_written, on_disk


PAGE_SIZES = (8_000, 30_000, 80_000, 200_000)


def _corpus(limit: int = 4_000_000) -> str:
    text, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_text(errors="replace")
        text.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return "".join(text)


async def _pages_site(corpus: str) -> tuple[web.AppRunner, int]:
    async def page(request: web.Request) -> web.Response:
        index = int(request.match_info["n"])
        size = PAGE_SIZES[index % len(PAGE_SIZES)]
        start = (index * 7919 * 97) % (len(corpus) - size)
        body = f"<html><head><title>Page {index}</title></head><body><pre>" \
               f"{corpus[start:start + size]}</pre></body></html>"
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _pages(mode: str, out: Path, count: int) -> tuple[int, int, int]:
    helper_config = parse_config({"helper": {"listen": "127.0.0.1:0",
                                             "allow_nets": ["127.0.0.0/8"],
                                             "allowed_ports": ["1-65535"]}}).config
    helper, helper_url = await start_helper(helper_config)
    runner, port = await _pages_site(_corpus())
    try:
        config = parse_config({
            "analysis": {"not_bogon": ["127.0.0.0/8"]},
            "control": {"helper_url": [helper_url]},
            "output": {"dir": str(out), "store_bodies": mode, "compress": "gzip"},
            "limits": {"rate": 200, "burst": 50, "concurrency": 8},
        }, where=f"pages/{mode}").config
        targets = [parse_target(f"http://127.0.0.1:{port}/page/{i}") for i in range(count)]
        daemon = Daemon(config, targets)
        await daemon.serve(once=True)
    finally:
        await runner.cleanup()
        await helper.cleanup()
    on_disk = await asyncio.to_thread(_gzip_bytes, out)
    return daemon.sink.stats.records_written, daemon.sink.stats.bytes_written, on_disk


def _line(workload: str, mode: str, result: tuple[int, int, int]) -> str:
    records, raw, gz = result
    return (f"{workload:<6} store_bodies={mode:<9} records={records:4d} "
            f"bytes/record: {raw / records:8.0f} plain, {gz / records:7.0f} gzip")


async def main(sweeps: int) -> None:
    lines = []
    for mode in ("always", "anomalous", "never"):
        with tempfile.TemporaryDirectory() as tmp:
            lines.append(_line("pages", mode, await _pages(mode, Path(tmp), 40 * sweeps)))
    lines += await _demo(sweeps)
    print("\n".join(lines))


async def _demo(sweeps: int) -> list[str]:
    lines = []
    async with DemoNetwork() as network:
        helper_config = parse_config(tomllib.loads(network.helper_config_toml())).config
        helper, helper_url = await start_helper(helper_config)
        try:
            for mode in ("always", "anomalous", "never"):
                with tempfile.TemporaryDirectory() as tmp:
                    result = await _sweep(network, helper_url, mode, Path(tmp), sweeps)
                lines.append(_line("demo", mode, result))
        finally:
            await helper.cleanup()
    return lines


if __name__ == "__main__":
    configure_logging("warning")
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
