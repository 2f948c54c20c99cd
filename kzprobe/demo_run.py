"""``kzprobe demo``: a real ``run --once`` sweep of a simulated censored network.

The network (:class:`kzprobe.demo.DemoNetwork`) runs on loopback in this process; the
sweep is the daemon's own code path, writing NDJSON under the output directory. A
short per-target summary goes to stdout so a newcomer sees what was found and how.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from kzprobe.config import parse_config
from kzprobe.demo import DemoNetwork, DemoTarget
from kzprobe.helper import start_helper
from kzprobe.service import Daemon
from kzprobe.targets import parse_target
from kzprobe.verdict.analysis.observations import web_title
from kzprobe.verdict.analysis.records import body_bytes


def observed(keys: dict[str, Any]) -> str:
    """One line saying what the measurement saw, most specific evidence first."""
    codes = keys.get("interference")
    if codes:
        return f"interference: {', '.join(codes)} (OONI blocking: {keys.get('blocking')})"
    if keys.get("dns_experiment_failure"):
        return f"dns: {keys['dns_experiment_failure']}"
    for shake in keys.get("tls_handshakes", []):
        if shake.get("failure"):
            return f"tls: {shake['failure']} (server_name {shake.get('server_name')})"
    requests = keys.get("requests") or []
    if requests and requests[0].get("response", {}).get("code"):
        final = requests[0]["response"]
        title = web_title(body_bytes(final.get("body")))  # the title title_match compares
        return f"HTTP {final['code']} {title!r}".rstrip()
    failure = keys.get("http_experiment_failure")
    if failure:
        return f"failure: {failure}"
    connects = keys.get("tcp_connect", [])
    if not connects and keys.get("queries"):
        answers = [a.get("ipv4") or a.get("ipv6") for q in keys["queries"]
                   for a in q.get("answers", [])]
        return f"dns: answered {', '.join(a for a in answers if a)}; not dialled (loopback/bogon)"
    return "no result"


def _print_summary(out: TextIO, targets: list[DemoTarget], records: dict[str, dict[str, Any]],
                   output: Path) -> None:
    width = max(len(t.url) for t in targets)
    out.write("\nkzprobe demo: one sweep of a simulated censored network on loopback\n\n")
    for target in targets:
        record = records.get(target.url)
        seen = observed(record["test_keys"]) if record else "no record"
        out.write(f"  {target.url:<{width}}  [{target.category_code}]\n")
        out.write(f"      simulated: {target.what_happens}\n      measured:  {seen}\n")
    out.write(f"\n{len(records)} records written as NDJSON under {output}/\n")


async def run_demo(output: Path, out: TextIO = sys.stdout) -> int:
    """Start the demo network, sweep it once with the real daemon, print what was found.

    ``output`` is an existing, absolute directory (the CLI prepares it).
    """
    async with DemoNetwork() as network:
        helper_config = parse_config(tomllib.loads(network.helper_config_toml()),
                                     where="demo helper").config
        helper, helper_url = await start_helper(helper_config)
        try:
            return await _sweep(network, output, helper_url, out)
        finally:
            await helper.cleanup()


async def _sweep(network: DemoNetwork, output: Path, helper_url: str, out: TextIO) -> int:
    """One ``run --once`` of the daemon over the demo targets, with the helper as control."""
    config_text = network.config_toml(output, helper_url=helper_url)
    await asyncio.to_thread((output / "demo-config.toml").write_text, config_text, "utf-8")
    config = parse_config(tomllib.loads(config_text), where="demo").config
    targets = [parse_target(t.url, category_code=t.category_code, origin="demo")
               for t in network.targets]
    records: dict[str, dict[str, Any]] = {}

    async def remember(record: dict[str, Any]) -> None:
        records[str(record["input"])] = record

    code = await Daemon(config, targets, on_record=remember).serve(once=True)
    _print_summary(out, network.targets, records, output)
    html = output / "report.html"
    await asyncio.to_thread(_write_report, output, html)
    out.write(f"HTML report: {html}  (and: kzprobe report {output})\n")
    return code


def _write_report(segments: Path, html: Path) -> None:
    """The sweep through `kzprobe report`, as a self-contained HTML file."""
    from kzprobe.report import command

    request = command.request_from([segments], since=None, until=None, fmt="html",
                                   table="targets", export_parquet=None, memory_limit="256MB")
    command.write_output(command.run(request), html)
