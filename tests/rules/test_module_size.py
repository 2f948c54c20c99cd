"""No module in kzprobe/ over MAX_LINES lines: a longer one holds more than one layer."""

from __future__ import annotations

from tests.rules.source import package_files, rel

MAX_LINES = 600

# Ratchet: today's oversized modules and their size. An entry may not grow, and must be
# removed once the module is split below MAX_LINES.
ALLOWED: dict[str, int] = {
}


def _sizes() -> dict[str, int]:
    return {rel(path): len(path.read_text(encoding="utf-8").splitlines())
            for path in package_files()}


def test_no_module_over_the_limit() -> None:
    """Each module is at most MAX_LINES long, or an allowlisted one that has not grown."""
    sizes = _sizes()
    too_long = {name: n for name, n in sizes.items()
                if n > MAX_LINES and n > ALLOWED.get(name, MAX_LINES)}
    assert not too_long, f"modules over {MAX_LINES} lines (or grown past their allowance)"\
        f": {too_long}"


def test_allowlist_only_shrinks() -> None:
    """An allowlisted module that is gone or back under the limit must leave the list."""
    sizes = _sizes()
    stale = {name: sizes.get(name) for name in ALLOWED if sizes.get(name, 0) <= MAX_LINES}
    assert not stale, f"remove from ALLOWED (now within {MAX_LINES} lines or gone): {stale}"
