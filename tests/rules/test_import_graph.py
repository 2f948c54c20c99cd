"""No import cycle inside kzprobe, and every kzprobe import outside the package resolves.

The graph is built from the source (ast), not by importing: it counts module-level,
function-level and ``if TYPE_CHECKING:`` imports (mypy follows those too) and the lazy
``"module:Class"`` strings of the experiment registry, as edges of the loader that
``importlib``-loads them at run time (the registry itself is pure data and imports none).
Imports name the module they load; a parent package's ``__init__`` is not an edge, so
import from submodules, never from a package's ``__init__``.

Benchmarks are neither run nor type-checked, so a moved module would break them silently:
their imports (and the tests') are checked here against the files.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from kzprobe.measure.registry import SPECS
from tests.rules.source import ROOT, module_file, module_name, package_files, parse, rel

LOADER_MODULE = "kzprobe.measure.loader"  # imports the registry's "module:Class" strings

Edge = tuple[str, str, str]  # (importer, imported, "line N (kind)")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <module> import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(tree: ast.Module, importer: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(module, line) for every import statement anywhere in the file, submodules preferred."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(importer, is_package, node)
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield (sub if module_file(sub) else module), node.lineno


def _kind(tree: ast.Module, line: int) -> str:
    """How an import at ``line`` runs: top level, inside a function, or for type checkers."""
    for node in ast.walk(tree):
        end = getattr(node, "end_lineno", None)
        if end is None or not node.lineno <= line <= end:
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return "function"
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return "TYPE_CHECKING"
    return "top"


def _registry_entries() -> list[tuple[str, str]]:
    """(module, class) of each spec's ``"module:Class"`` in the registry (pure: imported)."""
    return [(module, cls) for module, _, cls in
            (spec.experiment.partition(":") for spec in SPECS)]


@cache
def _edges() -> list[Edge]:
    edges = []
    for path in package_files():
        importer, tree = module_name(path), parse(path)
        for imported, line in _imports(tree, importer, path.name == "__init__.py"):
            if imported.split(".")[0] == "kzprobe" and imported != importer:
                edges.append((importer, imported, f"line {line} ({_kind(tree, line)})"))
    for module, cls in _registry_entries():
        edges.append((LOADER_MODULE, module, f"{cls} (REGISTRY string)"))
    return edges


def _cycles(edges: list[Edge]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(cycle: frozenset[str], edges: list[Edge]) -> str:
    inside = sorted(f"  {a} -> {b} {where}" for a, b, where in edges if a in cycle and b in cycle)
    return "{" + ", ".join(sorted(cycle)) + "}\n" + "\n".join(inside)


def test_import_graph_sees_every_kind_of_edge() -> None:
    """The graph really holds the function-level, TYPE_CHECKING and registry edges it claims."""
    kinds = {where.split("(")[1] for _, _, where in _edges()}
    assert {"top)", "function)", "TYPE_CHECKING)", "REGISTRY string)"} <= kinds


def test_cycle_finder_finds_cycles() -> None:
    """The component search reports a three-module loop and a self-contained pair, nothing else."""
    edges = [("a", "b", ""), ("b", "c", ""), ("c", "a", ""), ("c", "d", ""), ("d", "e", ""),
             ("e", "d", ""), ("f", "a", "")]
    assert sorted(map(sorted, _cycles(edges))) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycle() -> None:
    """kzprobe's import graph has no cycle (no allowlist: the last one is broken)."""
    edges = _edges()
    cycles = [_describe(c, edges) for c in _cycles(edges)]
    assert not cycles, "import cycle(s) in kzprobe:\n" + "\n".join(cycles)


def test_registry_strings_name_real_classes() -> None:
    """Each ``"module:Class"`` in the probe registry names a module file defining that class."""
    for module, cls in _registry_entries():
        path = module_file(module)
        assert path is not None, f"REGISTRY names missing module {module}"
        names = {n.name for n in parse(path).body if isinstance(n, ast.ClassDef)}
        assert cls in names, f"REGISTRY: {module} defines no class {cls}"


def _defined_names(tree: ast.Module) -> set[str] | None:
    """Names a module defines at top level (None: it has ``__getattr__`` or a star import)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return names


def _unresolved(path: Path, where: str | None = None) -> Iterator[str]:
    """Each ``kzprobe`` import (and ``-m kzprobe...`` argument) in ``path`` that names nothing."""
    tree = parse(path)
    where = where or rel(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kzprobe" and module_file(alias.name) is None:
                    yield f"{where}:{node.lineno}: no module {alias.name}"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0] == "kzprobe":
            yield from _unresolved_from(node, where)
        elif isinstance(node, ast.List | ast.Tuple | ast.Call):
            items = node.args if isinstance(node, ast.Call) else node.elts
            for flag, arg in itertools.pairwise(items):
                if isinstance(flag, ast.Constant) and flag.value == "-m" \
                        and isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and arg.value.startswith("kzprobe") and not _runnable(arg.value):
                    yield f"{where}:{arg.lineno}: -m {arg.value}: no such module"


def _runnable(module: str) -> bool:
    """``python -m module`` finds code: a module file or a package with ``__main__``."""
    path = module_file(module)
    return path is not None and (path.is_file() or (path / "__main__.py").is_file())


def _unresolved_from(node: ast.ImportFrom, where: str) -> Iterator[str]:
    assert node.module is not None
    path = module_file(node.module)
    if path is None:
        yield f"{where}:{node.lineno}: no module {node.module}"
        return
    defined = _defined_names(parse(path)) if path.is_file() else set()
    for alias in node.names:
        if module_file(f"{node.module}.{alias.name}") is None and defined is not None \
                and alias.name not in defined:
            yield f"{where}:{node.lineno}: {node.module} defines no {alias.name}"


def _outside_files() -> list[Path]:
    return sorted(
        [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
         *package_files()])


def test_kzprobe_imports_outside_the_package_resolve() -> None:
    """Every ``kzprobe.*`` import in tests/ and benchmarks/ (and the package) names a real thing."""
    problems = [p for path in _outside_files() for p in _unresolved(path)]
    assert not problems, "\n".join(problems)


def test_unresolved_import_is_caught(tmp_path: Path) -> None:
    """The resolver check is not vacuous: stale imports and a stale ``-m`` are reported."""
    stale = tmp_path / "stale.py"
    stale.write_text("import kzprobe.nosuch\nfrom kzprobe.config import NoSuchName\n"
                     "from kzprobe.nosuch import x\nARGV = ['-m', 'kzprobe.gone']\n"
                     "from kzprobe.measure.steps import http, dns\nimport kzprobe.config\n")
    found = list(_unresolved(stale, where="stale.py"))
    assert [p.split(":")[1] for p in found] == ["1", "2", "3", "4"], found
