"""Failure strings are named constants in one module, not literals spread over the package.

A failure string is a value of OONI's vocabulary (df-007-errors), the test helper's
vocabulary or kzprobe's own; ``unknown_failure...`` texts count too. Docstrings are prose
and do not count. Any string constant elsewhere in kzprobe/ with such a value is a literal
that should be the named constant of kzprobe/failures.py.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from tests.rules.source import ROOT, docstring_nodes, package_files, parse, rel

FAILURES_MODULE = "kzprobe/failures.py"

KNOWN = frozenset({
    # OONI df-007-errors, as errors.py maps exceptions to them
    "generic_timeout_error", "eof_error", "connection_reset", "connection_refused",
    "connection_aborted", "host_unreachable", "network_unreachable", "network_down",
    "network_reset", "address_not_available", "address_in_use", "address_family_not_supported",
    "permission_denied", "no_buffer_space", "invalid_argument", "interrupted",
    "dns_no_answer", "dns_server_misbehaving", "dns_servfail_error", "dns_nxdomain_error",
    "dns_refused_error", "dns_bogon_error", "dns_temporary_failure", "dns_non_recoverable_failure",
    "ssl_invalid_hostname", "ssl_unknown_authority", "ssl_invalid_certificate",
    "ssl_failed_handshake", "json_parse_error", "http_invalid_redirect_location_host",
    # HTTP and connect failures kzprobe reports
    "http_header_too_large", "http_invalid_response", "http_too_many_redirects", "connect_error",
    # the web-connectivity test helper's (THResponse) vocabulary
    "connection_refused_error", "dns_name_error", "dns_server_failure", "dns_lookup_error",
    "unknown_error", "http_request_failed",
})
UNKNOWN_PREFIX = "unknown_failure"


def named_failures() -> dict[str, str]:
    """value -> name of each string constant kzprobe/failures.py defines at top level."""
    named = {}
    for node in parse(ROOT / FAILURES_MODULE).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            named[node.value.value] = ast.unparse(node.targets[0])
    return named


VOCABULARY = KNOWN | frozenset(named_failures())

# Ratchet: today's literal count per file. A file may not gain literals; once it loses some,
# its allowance must be lowered to the new count (or the entry removed at 0).
ALLOWED: dict[str, int] = {}


def is_failure(value: str) -> bool:
    return value in VOCABULARY or value.startswith(UNKNOWN_PREFIX)


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of each failure-string constant in ``path`` that is not a docstring."""
    tree = parse(path)
    docs = docstring_nodes(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docs and is_failure(node.value))


def _counts() -> dict[str, list[tuple[int, str]]]:
    found = {rel(path): literals(path) for path in package_files()
             if rel(path) != FAILURES_MODULE}
    return {name: hits for name, hits in found.items() if hits}


def test_no_new_failure_literals() -> None:
    """No file outside the failures module holds more failure literals than it is allowed."""
    over = {name: [f"line {line}: {value!r}" for line, value in hits]
            for name, hits in _counts().items() if len(hits) > ALLOWED.get(name, 0)}
    assert not over, f"use the named constants of {FAILURES_MODULE}: {over}"


def test_allowlist_only_shrinks() -> None:
    """An allowance above a file's count must come down to it, so converted literals stay so."""
    counts = Counter({name: len(hits) for name, hits in _counts().items()})
    stale = {name: f"{allowed} -> {counts[name]}" for name, allowed in ALLOWED.items()
             if counts[name] < allowed}
    assert not stale, f"lower ALLOWED (remove entries at 0): {stale}"


def test_failures_module_names_the_whole_vocabulary() -> None:
    """Every known failure string has its constant, each defined once."""
    named = named_failures()
    assert sorted(KNOWN - set(named)) == []
    assert UNKNOWN_PREFIX in named
    assignments = [n for n in parse(ROOT / FAILURES_MODULE).body if isinstance(n, ast.Assign)]
    values = [ast.unparse(n.value) for n in assignments if isinstance(n.value, ast.Constant)]
    assert len(values) == len(set(values)), "a failure string is defined twice"


def test_failures_module_imports_nothing() -> None:
    """failures.py stays a leaf: the analysis (pure) and the probes both import it."""
    imports = [ast.unparse(n) for n in ast.walk(parse(ROOT / FAILURES_MODULE))
               if isinstance(n, ast.Import)
               or (isinstance(n, ast.ImportFrom) and n.module != "__future__")]
    assert imports == []


def test_literal_finder_sees_literals_not_docstrings(tmp_path: Path) -> None:
    """A literal in code, a dict key and an f-string prefix count; docstrings and keys do not."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""eof_error in the module docstring."""\n'
                      'def f(x):\n    """connection_reset in a docstring."""\n'
                      '    m = {"dns_nxdomain_error": 1, "http_experiment_failure": x}\n'
                      '    return f"unknown_failure: {x}" if x else "eof_error"\n')
    assert literals(sample) == [(4, "dns_nxdomain_error"), (5, "eof_error"),
                                (5, "unknown_failure: ")]
