"""The tables the README documents have one source (the README) and agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from kzprobe.measure.registry import PROTOCOL_STEPS
from kzprobe.verdict.analysis.endpoints import PROTOCOL_FAILURES
from kzprobe.verdict.analysis.interference import CODES

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_after(heading: str) -> list[str]:
    """The first-column cells of the first ``| code | set when |`` table after ``heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    table = text.index("| code | set when |", start)
    rows = []
    for line in text[table:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1])
    return rows


def _codes(cells: list[str]) -> set[str]:
    return {code for cell in cells for code in re.findall(r"`([^`]+)`", cell)}


def test_interference_table_lists_exactly_the_codes() -> None:
    assert _codes(_table_after("## Verdicts")) == set(CODES)


def test_endpoint_table_covers_every_protocol_and_ending() -> None:
    cells = _table_after("### Endpoint targets")
    listed = _codes(cells)
    assert {"tcp.refused", "tcp.timeout", "tcp.reset", "tls.reset", "tls.timeout", "tls.eof",
            "tls.mitm"} <= listed
    protocol_row = next(cell for cell in cells if "<protocol>" in cell)
    row = next(line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith(f"|{protocol_row}|"))
    for protocol in set(PROTOCOL_STEPS.values()):
        assert f"`{protocol}`" in row, protocol
    for ending in {*PROTOCOL_FAILURES.values(), "invalid"}:
        assert f".{ending}`" in row, ending


def test_docstrings_point_to_the_readme_instead_of_repeating_it() -> None:
    package = Path(__file__).resolve().parents[1] / "kzprobe"
    copies = [str(path) for path in package.rglob("*.py")
              if "| code | set when |" in path.read_text(encoding="utf-8")]
    assert not copies, copies


def test_every_toml_example_in_the_readme_is_valid_and_known() -> None:
    """Copy-paste configs in the README parse, and every key they set is a real one."""
    import tomllib

    from kzprobe.config import parse_config

    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        data = tomllib.loads(block)
        for webhook in data.get("alerts", {}).get("webhooks", []):
            webhook.pop("token_file", None)  # a credential file on the VPS, not here
        loaded = parse_config(data, where="README")
        assert [w for w in loaded.warnings if "unknown" in w] == [], block
