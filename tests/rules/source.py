"""Shared helpers for the rule tests: the package's source files, parsed once."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kzprobe"


def rel(path: Path) -> str:
    """A path as the allowlists spell it: relative to the repository, with forward slashes."""
    return path.relative_to(ROOT).as_posix()


def package_files() -> Iterator[Path]:
    """Every Python source file of the kzprobe package."""
    yield from sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    """``kzprobe/measure/context.py`` -> ``kzprobe.measure.context``; a package is its
    ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str) -> Path | None:
    """The file that defines module ``name`` (a ``.py``, a package ``__init__``), if any.

    A namespace package (a directory without ``__init__.py``, like kzprobe/simnet) is its
    directory.
    """
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return base if base.is_dir() and name.startswith("kzprobe") else None


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def docstring_nodes(tree: ast.Module) -> set[int]:
    """ids of the Constant nodes that are docstrings (of the module, classes and functions)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                found.add(id(body[0].value))
    return found
