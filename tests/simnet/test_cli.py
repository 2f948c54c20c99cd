"""``python -m kzprobe.simnet``: READY line, SIGHUP reload, SIGTERM stop, as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from dnslib import RCODE

from kzprobe.simnet.common import parse_hostport
from kzprobe.simnet.dns import query

from .clients import http_get, split


@asynccontextmanager
async def component(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str]]]:
    """Run one component; yield it with its READY addresses; always reap it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kzprobe.simnet", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("READY "), line
        yield proc, json.loads(line[6:])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stderr_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    return (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()


async def test_dns_process_ready_reload_and_stop(tmp_path: Path) -> None:
    """The dns command prints READY, answers, re-reads --rules on SIGHUP, exits 0 on SIGTERM."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"zone": {"a.demo": ["127.0.0.5"]}}))
    async with component("dns", "--listen", "127.0.0.1:0", "--rules", str(rules)) as (proc, ready):
        address = parse_hostport(ready["udp"])
        before = await query("a.demo", "A", address)
        rules.write_text(json.dumps({"rules": {"a.demo": "nxdomain"}}))
        proc.send_signal(signal.SIGHUP)
        reloaded = await _stderr_line(proc)
        after = await query("a.demo", "A", address)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 5)
    assert (ready["component"], ready["tcp"]) == ("dns", ready["udp"])
    assert [str(rr.rdata) for rr in before.rr] == ["127.0.0.5"]
    assert reloaded.startswith("reloaded") and after.header.rcode == RCODE.NXDOMAIN
    assert code == 0


async def test_bad_reload_keeps_old_rules(tmp_path: Path) -> None:
    """An invalid rules file on SIGHUP is reported and the old rules stay in force."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": {"a.demo": "refused"}}))
    async with component("dns", "--listen", "127.0.0.1:0", "--rules", str(rules)) as (proc, ready):
        rules.write_text("{not json")
        proc.send_signal(signal.SIGHUP)
        message = await _stderr_line(proc)
        reply = await query("a.demo", "A", parse_hostport(ready["udp"]))
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 5)
    assert message.startswith("reload failed") and reply.header.rcode == RCODE.REFUSED
    assert code == 0


async def test_pki_then_web_and_blockpage_processes(tmp_path: Path) -> None:
    """pki writes files that web loads; a blockpage process in front blocks one Host."""
    async with component("pki", "--dir", str(tmp_path / "pki"), "--leaf-key", "ec") as (_, pki):
        pass
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps([{"name": "news.demo", "title": "News"}]))
    async with component("web", "--host", "127.0.0.1", "--http-port", "0", "--https-port", "0",
                         "--pki", pki["dir"], "--sites", str(sites)) as (_, web), \
            component("blockpage", "--listen", "127.0.0.1:0", "--upstream", web["http"],
                      "--block", "blocked.demo") as (_, box):
        page = split(await http_get(parse_hostport(box["tcp"]), "news.demo"))
        blocked = split(await http_get(parse_hostport(box["tcp"]), "blocked.demo"))
    assert pki["ca_file"] == str(tmp_path / "pki" / "ca-bundle.pem")
    assert b"<title>News</title>" in page[2]
    assert "Страница заблокирована" in blocked[2].decode()


def test_usage_error_exits_2(tmp_path: Path) -> None:
    """A missing PKI directory is a one-line error and exit status 2."""
    from kzprobe.simnet.cli import main

    assert main(["mitm", "--listen", "127.0.0.1:0", "--pki", str(tmp_path / "none")]) == 2
