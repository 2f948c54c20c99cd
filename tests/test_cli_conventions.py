"""CLI conventions (issue 20): usage, "did you mean", completion, ``measure --format pretty``
and ``-``, relative report times, options that are honoured or refused, never ignored."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.report.builders import lines, web, write
from tests.service.harness import Site

KZPROBE = [sys.executable, "-m", "kzprobe"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KZPROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_no_arguments_prints_usage_and_exits_2() -> None:
    result = _run()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: kzprobe ")
    assert "measure" in result.stderr and "init" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "kzprobe: error: a command is required (kzprobe --help lists them)")


@pytest.mark.parametrize(("typo", "meant"), [("mesure", "measure"), ("reprot", "report"),
                                             ("chek-config", "check-config")])
def test_a_mistyped_command_suggests_the_right_one(typo: str, meant: str) -> None:
    line = _one_line_error(_run(typo))
    assert line.endswith(f"; did you mean '{meant}'?"), line


def test_an_unlike_command_gets_no_suggestion() -> None:
    assert "did you mean" not in _one_line_error(_run("xyzzy"))


# ----------------------------------------------------------------------------- completion

def _complete(script: Path, *words: str) -> list[str]:
    """What bash's completion offers for the last word, as `compgen` gives it."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}; COMP_WORDS=(kzprobe {quoted}); COMP_CWORD={len(words)}; "
               'COMPREPLY=(); _kzprobe; printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_options_and_choices(tmp_path: Path) -> None:
    made = _run("completion", "bash")
    assert made.returncode == 0
    script = tmp_path / "kzprobe.bash"
    script.write_text(made.stdout, encoding="utf-8")
    assert _complete(script, "mea") == ["measure"]
    assert _complete(script, "re") == ["report"]
    assert _complete(script, "report", "--format", "") == ["table", "csv", "json", "html"]
    assert _complete(script, "report", "data/", "--ta") == ["--table"]
    assert _complete(script, "measure", "--format", "p") == ["pretty"]
    assert _complete(script, "--log-level", "w") == ["warning"]
    assert _complete(script, "--log-level", "debug", "in") == ["init"]
    assert _complete(script, "completion", "")[:2] == ["bash", "zsh"]
    assert _complete(script, "run", "--") == ["--help", "--once", "--config", "--log-level",
                                             "--no-uvloop"]


def test_zsh_completion_is_the_bash_function_through_bashcompinit() -> None:
    zsh, bash = _run("completion", "zsh"), _run("completion", "bash")
    assert zsh.returncode == 0
    assert zsh.stdout == "autoload -U +X bashcompinit && bashcompinit\n" + bash.stdout
    assert _one_line_error(_run("completion", "fish")).startswith("kzprobe completion: error:")


# ------------------------------------------------------------------ measure: pretty and '-'

async def test_measure_pretty_reads_urls_from_stdin(tmp_path: Path) -> None:
    """``-`` takes stdin's lines (blank and # lines skipped) beside arguments; pretty is one
    block per target with the verdict, what was seen, and timings."""
    site = Site()
    await site.start()
    try:
        config = tmp_path / "c.toml"
        config.write_text('[dns]\nresolvers = ["127.0.0.1:1"]\n'
                          '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n', encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            *KZPROBE, "measure", site.url("/first"), "-", "--format", "pretty",
            "--config", str(config), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        given = f"# a list\n\n{site.url('/second')}\n".encode()
        out, err = await asyncio.wait_for(proc.communicate(given), 120)
    finally:
        await site.close()
    assert proc.returncode == 0, err.decode()
    assert sorted(site.seen) == ["/first", "/second"]
    blocks = out.decode().strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [site.url("/first"), site.url("/second")]
    for block in blocks:
        fields = dict(line.strip().split(":", 1) for line in block.splitlines()[1:])
        assert fields["verdict"].strip() == "unknown (no control: nothing was compared)"
        assert fields["ooni"].strip() == "blocking null, accessible null"  # JSON, not None
        assert fields["seen"].strip() == 'HTTP 200 "Service test page"'
        assert "connect " in fields["timings"] and "total " in fields["timings"]


def test_measure_with_an_empty_stdin_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("", encoding="utf-8")
    result = subprocess.run([*KZPROBE, "measure", "-", "--config", str(config)], input="\n#x\n",
                            capture_output=True, text=True, timeout=60)
    assert _one_line_error(result) == "kzprobe: error: stdin: no URLs"


# ------------------------------------------------------------------------------- report

def _ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def recent(tmp_path: Path) -> Path:
    """One segment: a record 2 hours old and one 48 hours old."""
    data = tmp_path / "data"
    stamp = (datetime.now(UTC) - timedelta(hours=49)).strftime("%Y%m%dT%H%M%SZ")
    write(data / f"kz-{stamp}-vps1-100-000001.ndjson.gz",
          lines([web("https://old.kz/", _ago(48)), web("https://new.kz/", _ago(2))]))
    return data


@pytest.mark.parametrize(("since", "records"), [("24h", 1), ("3d", 2), ("90m", 0),
                                                ("1w", 2)])
def test_report_since_a_time_ago(recent: Path, since: str, records: int) -> None:
    result = _run("report", str(recent), "--format", "json", "--since", since)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["records"] == records


def test_report_absolute_times_still_work_and_bad_ones_say_the_forms(recent: Path) -> None:
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    result = _run("report", str(recent), "--format", "json", "--since", since)
    assert json.loads(result.stdout)["summary"]["records"] == 1
    line = _one_line_error(_run("report", str(recent), "--since", "yesterday"))
    assert "24h" in line and "YYYY-MM-DD" in line


def test_report_html_to_a_terminal_is_refused(recent: Path) -> None:
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([*KZPROBE, "report", str(recent), "--format", "html"],
                                stdout=follower, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert result.stderr == ("kzprobe: error: report: --format html is a file to open in a "
                             "browser, not for a terminal; add --output report.html\n")


def test_report_html_to_a_pipe_or_file_is_written(recent: Path, tmp_path: Path) -> None:
    piped = subprocess.run([*KZPROBE, "report", str(recent), "--format", "html"],
                           capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout.lstrip().lower().startswith(b"<!doctype html")


@pytest.mark.parametrize("fmt", ["table", "json", "html"])
def test_report_table_is_refused_where_it_means_nothing(recent: Path, fmt: str) -> None:
    line = _one_line_error(_run("report", str(recent), "--format", fmt, "--table", "changes"))
    assert line == (f"kzprobe: error: --table: only with --format csv (--format {fmt} shows "
                    "every table)")


def test_report_table_is_honoured_by_csv(recent: Path) -> None:
    targets = _run("report", str(recent), "--format", "csv")
    networks = _run("report", str(recent), "--format", "csv", "--table", "networks")
    assert targets.returncode == networks.returncode == 0
    assert targets.stdout.splitlines()[0] != networks.stdout.splitlines()[0]
    assert "new.kz" in targets.stdout and "AS9198" in networks.stdout


def test_report_export_parquet_says_what_it_wrote(recent: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = _run("report", str(recent), "--export-parquet", str(lake))
    assert result.returncode == 0, result.stderr
    files = sorted(lake.rglob("*.parquet"))
    days = sorted(p.name for p in lake.iterdir())
    noted = [line for line in result.stderr.splitlines() if line.startswith("kzprobe: exported")]
    assert noted == [f"kzprobe: exported 2 rows to {len(files)} Parquet "
                     f"file{'' if len(files) == 1 else 's'} in {len(days)} day "
                     f"partition{'' if len(days) == 1 else 's'} under {lake}/"]


@pytest.mark.parametrize(("argv", "level", "uvloop_off"), [
    (["report", "d"], "info", False),
    (["--log-level", "error", "report", "d"], "error", False),
    (["report", "d", "--log-level", "debug", "--no-uvloop"], "debug", True),
    (["--log-level", "error", "--no-uvloop", "measure", "u", "--log-level", "warning"],
     "warning", True),
])
def test_global_options_are_accepted_after_the_command(argv: list[str], level: str,
                                                       uvloop_off: bool) -> None:
    from kzprobe.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.log_level, args.no_uvloop) == (level, uvloop_off)


def test_a_bad_global_option_after_the_command_is_one_line() -> None:
    line = _one_line_error(_run("report", "x", "--log-level", "loud"))
    assert "--log-level" in line and "invalid choice" in line


def test_help_texts_carry_examples() -> None:
    for command, example in (("measure", "kzprobe measure -"), ("report", "--since 24h"),
                             ("completion", "source <(kzprobe completion bash)")):
        result = _run(command, "--help")
        assert result.returncode == 0 and example in result.stdout, command
