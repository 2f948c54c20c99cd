"""``kzprobe report`` on the command line: formats, output file, one-line errors."""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from kzprobe.cli import main


def _run(argv: list[str], capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[int, bytes, str]:
    code = main(argv)
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def test_json_to_stdout(fleet: list[Path], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """--format json: the whole report as one JSON document, exit 0."""
    code, out, _ = _run(["report", *map(str, fleet), "--format", "json"], capsysbinary)
    document = orjson.loads(out)
    assert code == 0
    assert document["summary"]["records"] == 22
    assert len(document["errors"]) == document["summary"]["corrupt_lines"] == 3
    assert [c["at"] for c in document["changes"]] == [
        "2024-03-01 02:00:00", "2024-03-01 02:00:00", "2024-03-02 00:00:00",
        "2024-03-02 01:00:00"]


def test_csv_table_to_file(fleet: list[Path], tmp_path: Path,
                           capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """--format csv --table changes --output FILE: one rectangular table in the file."""
    target = tmp_path / "changes.csv"
    code, out, _ = _run(["report", *map(str, fleet), "--format", "csv", "--table", "changes",
                         "--output", str(target)], capsysbinary)
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert (code, out) == (0, b"")
    assert rows[0] == ["input", "probe_asn", "from_state", "from_mechanism", "to_state",
                       "to_mechanism", "after", "at"]
    assert rows[2] == ["https://twitter.com/", "AS9198", "accessible", "", "blocked",
                       "tls.timeout", "2024-03-01 01:00:00", "2024-03-01 02:00:00"]


def test_table_says_what_is_blocked_since_when(
        fleet: list[Path], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """The terminal format leads with the quotable list of targets blocked now."""
    code, out, _ = _run(["report", *map(str, fleet), "--since", "2024-03-01"], capsysbinary)
    text = out.decode()
    assert code == 0
    assert ("https://twitter.com/ [AS9198]: blocked since 2024-03-01 02:00:00 UTC, tls.timeout "
            "(changed after 2024-03-01 01:00:00 UTC)") in text
    assert "== errors (3)" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "--since: not a time: 'yesterday'"),
    (["--since", "2024-03-02", "--until", "2024-03-01"], "--since must be before --until"),
    (["--memory-limit", "lots"], "--memory-limit: not a size: 'lots'"),
])
def test_bad_options_are_one_line_exit_2(fleet: list[Path], args: list[str], message: str,
                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """A time that does not parse, an empty window, a bad size: one line on stderr, exit 2."""
    code, out, err = _run(["report", *map(str, fleet), *args], capsysbinary)
    assert (code, out) == (2, b"")
    assert err.startswith(f"kzprobe: error: {message}") and err.count("\n") == 1


def test_missing_path_is_one_line_exit_2(tmp_path: Path) -> None:
    """A path that does not exist: exit 2, one line, no traceback (a real process)."""
    result = subprocess.run(
        [sys.executable, "-m", "kzprobe", "report", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr == f"kzprobe: error: {tmp_path / 'nowhere'}: no such file or directory\n"


def test_output_to_a_fifo_stays_a_fifo(fleet: list[Path], tmp_path: Path,
                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """--output to something that is not a regular file writes into it, never replaces it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, _ = _run(["report", *map(str, fleet), "--format", "json", "--output", str(fifo)],
                      capsysbinary)
    reader.join(timeout=30)
    assert code == 0 and stat.S_ISFIFO(fifo.stat().st_mode)
    assert orjson.loads(received[0])["summary"]["records"] == 22


def test_output_file_is_replaced_whole(fleet: list[Path], tmp_path: Path,
                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """An existing report file is replaced by the new one, readable by others, no temp left."""
    target = tmp_path / "report.json"
    target.write_text("old")
    code, _, _ = _run(["report", *map(str, fleet), "--format", "json", "-o", str(target)],
                      capsysbinary)
    assert code == 0 and orjson.loads(target.read_bytes())["summary"]["records"] == 22
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe-a", "probe-b", "report.json"]
