"""A broken install (duckdb or plotly not importable) is one clear line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the CLI with one module made unimportable, as on a partial or broken install.
_BLOCKED_RUN = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == {blocked!r} or name.startswith({blocked!r} + "."):
            raise ImportError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from kzprobe.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(("blocked", "extra"), [("duckdb", []), ("plotly", ["--format", "html"])])
def test_unimportable_report_dependency_is_one_line(tmp_path: Path, blocked: str,
                                                    extra: list[str]) -> None:
    segment = tmp_path / "kzprobe-x.ndjson"
    segment.write_text("")
    code = _BLOCKED_RUN.format(blocked=blocked, argv=["report", str(segment), *extra])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert blocked in lines[0] and "reinstall" in lines[0]
    assert "kzprobe[report]" not in lines[0]  # no such extra exists
