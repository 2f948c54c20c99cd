"""The kzprobe command as users and tools drive it: real subprocesses, real files."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.servers import DnsServer, WebSite, eventually

KZPROBE = [sys.executable, "-m", "kzprobe"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KZPROBE, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


async def _run_async(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*KZPROBE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version() -> None:
    """--version prints the version and exits 0."""
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("kzprobe ")


def test_unknown_command_is_one_line_exit_2() -> None:
    """A bad command is one line on stderr and exit code 2."""
    assert "invalid choice" in _one_line_error(_run("frobnicate"))


def test_missing_config_names_the_file(tmp_path: Path) -> None:
    """A missing config file is named in a one-line error."""
    line = _one_line_error(_run("check-config", str(tmp_path / "nope.toml")))
    assert "nope.toml" in line and "not found" in line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[limits]\nconcurrency = 'many'\n", "[limits] concurrency: expected int"),
        ("[limits]\nrate = -1\n", "[limits] rate: must be > 0"),
        ("[dns]\nresolvers = ['not-an-ip']\n", "[dns] resolvers"),
        ("[output]\ncompress = 'lzma'\n", "[output] compress: must be one of"),
        ("[probe\n", "invalid TOML"),
        ("[targets]\nfiles = ['missing.csv']\n", "missing.csv: target list not found"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, body: str, expected: str) -> None:
    """Wrong types, bad values, broken TOML and missing lists: one line naming file and key."""
    config = _write_config(tmp_path / "bad.toml", body + "[targets]\nurls=['http://a.test/']\n"
                           if "[targets]" not in body else body)
    line = _one_line_error(_run("check-config", str(config)))
    assert expected in line
    assert "bad.toml" in line or "missing.csv" in line


def test_check_config_reports_bad_rows_and_strict_fails(tmp_path: Path) -> None:
    """Bad CSV rows are warnings naming file:line; --strict turns them into exit 2."""
    csv = tmp_path / "list.csv"
    csv.write_text("url,category_code,category_description,date_added,source,notes\r\n"
                   "http://ok.test/,NEWS,News Media,2020-01-01,x,\r\n"
                   "ftp://bad.test/,NEWS,News Media,2020-01-01,x,\r\n"
                   "nourl,NEWS,News Media,2020-01-01,x,\r\n", encoding="utf-8-sig")
    config = _write_config(tmp_path / "c.toml", "[targets]\nfiles = ['list.csv']\n")
    lenient = _run("check-config", str(config))
    assert lenient.returncode == 0
    assert "list.csv:3" in lenient.stderr and "unsupported scheme" in lenient.stderr
    assert "list.csv:4" in lenient.stderr
    assert lenient.stdout.endswith(": OK, 1 target\n")
    assert _run("check-config", "--strict", str(config)).returncode == 2


def test_unknown_key_is_a_warning(tmp_path: Path) -> None:
    """Unknown keys warn (and fail only under --strict)."""
    config = _write_config(tmp_path / "c.toml",
                           "[limits]\nconcurency = 5\n[targets]\nurls = ['http://a.test/']\n")
    result = _run("check-config", str(config))
    assert result.returncode == 0
    assert "unknown key 'concurency'" in result.stderr
    assert _run("check-config", "--strict", str(config)).returncode == 2


@pytest.mark.parametrize("command", [["run", "--once"], ["measure", "http://a.test/"],
                                     ["helper"]])
def test_other_commands_print_the_first_config_error_with_its_line(
        tmp_path: Path, command: list[str]) -> None:
    """run, measure and helper stop at a bad config: one line (the first problem, with its
    line), exit 2; check-config is where all of them are listed."""
    config = _write_config(tmp_path / "c.toml", "[limits]\nrate = -1\nburst = 0\n[helper]\n"
                                     "listen = 'x'\n[targets]\nurls = ['http://a.test/']\n")
    line = _one_line_error(_run(*command, "--config", str(config)))
    assert line == f"kzprobe: error: {config}:2: [limits] rate: must be > 0, got -1"
    assert len(_run("check-config", str(config)).stderr.splitlines()) == 3


def test_measure_rejects_bad_url_with_exit_2(tmp_path: Path) -> None:
    """A URL argument without a scheme is a usage error, not a traceback."""
    config = _write_config(tmp_path / "c.toml", "")
    line = _one_line_error(_run("measure", "example", "--config", str(config)))
    assert "no scheme" in line


async def test_measure_prints_one_record_per_url(tmp_path: Path, ca_file: Path,
                                                 dns_server: DnsServer, website: WebSite) -> None:
    """`kzprobe measure` prints one record per URL, in order, and exits 0 even on failures."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    dns_server.faults["blocked.test"] = "nxdomain"
    config = _write_config(tmp_path / "c.toml", f"""
[dns]
resolvers = ["{dns_server.address}"]
query_aaaa = false
[tls]
ca_file = "{ca_file}"
[analysis]
not_bogon = ["127.0.0.0/8"]
""")
    urls = [f"https://site.test:{website.https_port}/", "https://blocked.test/"]
    code, out, _ = await _run_async("measure", *urls, "--config", str(config))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == urls
    assert records[0]["test_keys"]["requests"][0]["response"]["code"] == 200
    assert records[1]["test_keys"]["dns_experiment_failure"] == "dns_nxdomain_error"


async def test_run_once_writes_every_record_in_rotated_compressed_segments(
        tmp_path: Path, ca_file: Path, dns_server: DnsServer, website: WebSite) -> None:
    """`run --once` over 200 local URLs: exactly 200 records, several gzip segments, no .part."""
    dns_server.zone["site.test"] = ["127.0.0.1"]
    urls = [f"https://site.test:{website.https_port}/?n={i}" for i in range(200)]
    csv = tmp_path / "targets.csv"
    csv.write_text("url,category_code,category_description,date_added,source,notes\n" +
                   "".join(f"{u},NEWS,News Media,2024-01-01,test,\n" for u in urls))
    out_dir = tmp_path / "out"
    config = _write_config(tmp_path / "c.toml", f"""
[dns]
resolvers = ["{dns_server.address}"]
query_aaaa = false
[tls]
ca_file = "{ca_file}"
[analysis]
not_bogon = ["127.0.0.0/8"]
[limits]
rate = 1000
burst = 100
concurrency = 20
[output]
dir = "{out_dir}"
rotate_bytes = 200000
[targets]
files = ["targets.csv"]
""")
    code, _, err = await _run_async("run", "--once", "--config", str(config))
    assert code == 0, err
    segments = sorted(out_dir.glob("*.ndjson.gz"))
    assert len(segments) >= 3
    assert not list(out_dir.glob("*.part")) and not list(out_dir.glob("*.tmp"))
    records = [orjson.loads(line) for seg in segments
               for line in gzip.decompress(seg.read_bytes()).splitlines()]
    assert sorted(r["input"] for r in records) == sorted(urls)
    assert all(r["category_code"] == "NEWS" for r in records)
    assert website.hits == 200
    assert "sweep_finished" in err


async def test_sigterm_mid_sweep_drains_and_exits_0(
        tmp_path: Path, ca_file: Path, dns_server: DnsServer, website: WebSite) -> None:
    """SIGTERM: no new measurements, in-flight ones finish and are written, files closed, exit 0."""
    import signal

    dns_server.zone["site.test"] = ["127.0.0.1"]
    out_dir = tmp_path / "out"
    urls = ", ".join(f'"http://site.test:{website.http_port}/slow?s=1&i={i}"' for i in range(60))
    config = _write_config(tmp_path / "c.toml", f"""
[dns]
resolvers = ["{dns_server.address}"]
query_aaaa = false
[analysis]
not_bogon = ["127.0.0.0/8"]
[limits]
concurrency = 5
[output]
dir = "{out_dir}"
[service]
shutdown_grace = 10
[targets]
urls = [{urls}]
""")
    proc = await asyncio.create_subprocess_exec(*KZPROBE, "run", "--config", str(config),
                                                stderr=asyncio.subprocess.PIPE)
    await eventually(lambda: website.hits >= 5)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    assert not list(out_dir.glob("*.part"))
    records = [orjson.loads(line) for seg in sorted(out_dir.glob("*.ndjson.gz"))
               for line in gzip.decompress(seg.read_bytes()).splitlines()]
    assert website.hits <= len(records) < 60
    assert all(r["test_keys"]["requests"][0]["response"]["code"] == 200 for r in records)
