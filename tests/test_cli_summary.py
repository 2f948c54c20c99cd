"""Nothing skipped in silence, and a run that says what it found (issue 20, items 1 and 2):
real `kzprobe` subprocesses against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from pathlib import Path

import orjson

from tests.service.harness import Site

KZPROBE = [sys.executable, "-m", "kzprobe"]


async def _run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*KZPROBE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _events(err: str, name: str) -> list[dict[str, object]]:
    found = []
    for line in err.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


async def test_refused_loopback_dial_is_recorded_and_warned(tmp_path: Path) -> None:
    """Without 127.0.0.0/8 in not_bogon: no request reaches the server, the record says why
    (x_skipped, address_not_dialled, loopback) and stderr warns once, and says no control."""
    site = Site()
    await site.start()
    try:
        config = tmp_path / "c.toml"
        config.write_text('[dns]\nresolvers = ["127.0.0.1:1"]\n', encoding="utf-8")
        code, out, err = await _run("measure", site.url("/a"), site.url("/b"),
                                    "--config", str(config))
    finally:
        await site.close()
    assert code == 0, err
    assert site.hits() == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["test_keys"]["x_skipped"] for r in records] == [
        [{"ip": "127.0.0.1", "port": site.port, "failure": "address_not_dialled",
          "reason": "loopback"}]] * 2
    warned = _events(err, "address_not_dialled")
    assert len(warned) == 1 and warned[0]["count"] == 2
    assert len(_events(err, "no_control")) == 1


async def test_dialled_records_have_no_x_skipped(tmp_path: Path) -> None:
    """With not_bogon covering loopback the server is reached and nothing is skipped."""
    site = Site()
    await site.start()
    try:
        config = tmp_path / "c.toml"
        config.write_text('[dns]\nresolvers = ["127.0.0.1:1"]\n'
                          '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n', encoding="utf-8")
        code, out, err = await _run("measure", site.url("/a"), "--config", str(config))
    finally:
        await site.close()
    assert code == 0, err
    assert site.hits() == 1
    assert "x_skipped" not in json.loads(out)["test_keys"]
    assert not _events(err, "address_not_dialled")


async def test_run_once_summary_and_sweep_counts_match_the_segments(tmp_path: Path) -> None:
    """sweep_finished's records and states, and the summary's counts, equal the records in
    the segments; the summary names the segment and the report command."""
    site = Site()
    await site.start()
    out_dir = tmp_path / "out"
    urls = [site.url(f"/p{i}") for i in range(11)]
    config = tmp_path / "c.toml"
    config.write_text(
        '[dns]\nresolvers = ["127.0.0.1:1"]\n[analysis]\nnot_bogon = ["127.0.0.0/8"]\n'
        'retries = 0\n[limits]\nrate = 1000\nburst = 100\nconcurrency = 4\n'
        f'[output]\ndir = "{out_dir}"\n[targets]\nurls = {json.dumps(urls)}\n',
        encoding="utf-8")
    try:
        code, _, err = await _run("run", "--once", "--config", str(config))
    finally:
        await site.close()
    assert code == 0, err
    assert "\x1b[K" not in err  # stderr is a pipe: no progress line
    segments = sorted(out_dir.glob("*.ndjson*"))
    records = [orjson.loads(line) for seg in segments
               for line in gzip.decompress(seg.read_bytes()).splitlines()]
    assert len(records) == 11
    from kzprobe.progress import Tally

    tally = Tally()
    for record in records:
        tally.add(record)
    (finished,) = _events(err, "sweep_finished")
    assert finished["records"] == len(records) == tally.records
    assert finished["states"] == tally.state_counts()
    assert finished["no_control"] == 11
    summary = [line for line in err.splitlines() if line.startswith("kzprobe: ")]
    states = ", ".join(f"{n} {s}" for s, n in tally.state_counts().items())
    assert f"kzprobe: 11 records: {states}" in summary
    assert "kzprobe: 11 of 11 verdicts had no control (unknown, or OONI's rules without one)" \
        in summary
    assert all(f"kzprobe: wrote {seg}" in summary for seg in segments)
    assert summary[-1] == f"kzprobe: next: kzprobe report {out_dir}"


def _measure_on_a_terminal(config: Path, url: str, env: dict[str, str]) -> tuple[int, str]:
    """`kzprobe measure` with stderr on a pseudo-terminal: its exit code and what the
    terminal showed."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([*KZPROBE, "measure", url, "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=follower, timeout=60,
                              env={**os.environ, **env}, check=False)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


async def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """A progress line on a terminal; none on a pipe (the tests above) or under systemd
    (JOURNAL_STREAM set), where stderr is the log stream."""
    site = Site()
    await site.start()
    config = tmp_path / "c.toml"
    config.write_text('[dns]\nresolvers = ["127.0.0.1:1"]\n'
                      '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n', encoding="utf-8")
    clean = {"JOURNAL_STREAM": "", "INVOCATION_ID": ""}
    try:
        code, shown = await asyncio.to_thread(_measure_on_a_terminal, config, site.url("/"),
                                              clean)
        code_sd, shown_sd = await asyncio.to_thread(
            _measure_on_a_terminal, config, site.url("/"), {"JOURNAL_STREAM": "8:1234"})
    finally:
        await site.close()
    assert (code, code_sd) == (0, 0)
    assert "1/1 measured" in shown and "0 blocked" in shown
    assert "measured," not in shown_sd
