"""check-config finds everything: every problem in one run, each with file, line and key,
a "did you mean" for mistyped names, and helper-only configs checked as such."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzprobe.config import ConfigError, check_config_file, load_config
from kzprobe.config.positions import Positions

KZPROBE = [sys.executable, "-m", "kzprobe"]

FOUR_BAD = """\
[probe]
cc = "KAZ"

[limits]
rate = -1
concurrency = "many"

[targets]
urls = ["http://a.test/"]

[output]
compress = "lzma"
"""


def _write(tmp_path: Path, text: str, name: str = "k.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KZPROBE, "check-config", *args], capture_output=True, text=True,
                          timeout=60)


def test_four_bad_values_are_four_errors_with_their_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, FOUR_BAD)
    check = check_config_file(path)
    assert check.loaded is None and check.warnings == ()
    assert [e.split(": ")[0:2] for e in check.errors] == [
        [f"{path}:2", "[probe] cc"], [f"{path}:5", "[limits] rate"],
        [f"{path}:6", "[limits] concurrency"], [f"{path}:12", "[output] compress"]]
    assert "must be one of gzip, zstd, none; got 'lzma'" in check.errors[3]


def test_check_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, FOUR_BAD)
    result = _check(str(path))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"kzprobe: error: {path}:") for line in lines)
    assert [line.split(": ")[2].rsplit(":", 1)[1] for line in lines] == ["2", "5", "6", "12"]


def test_load_config_still_raises_the_first_problem_on_one_line(tmp_path: Path) -> None:
    """For run, measure and helper: the first problem only, now with its line."""
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, FOUR_BAD))
    assert str(caught.value) == (f"{tmp_path / 'k.toml'}:2: [probe] cc: expected a two-letter "
                                 f"country code, got 'KAZ'")


def test_unknown_section_and_key_suggest_the_known_name(tmp_path: Path) -> None:
    path = _write(tmp_path, '[probe]\ncontry = "KZ"\nnetwork_nam = "x"\n[timeout]\nhttp = 5\n'
                            '[targets]\nurls = ["http://a.test/"]\n[zzz]\n')
    check = check_config_file(path)
    assert check.errors == ()
    assert sorted(check.warnings) == sorted([
        f"{path}:4: unknown section [timeout]; did you mean [timeouts]?",
        f"{path}:8: unknown section [zzz]",
        f"{path}:2: [probe] unknown key 'contry'; did you mean 'cc'?",
        f"{path}:3: [probe] unknown key 'network_nam'; did you mean 'network_name'?"])
    lenient = _check(str(path))
    assert lenient.returncode == 0, lenient.stderr
    assert f"kzprobe: warning: {path}:4: unknown section [timeout]; did you mean [timeouts]?" \
        in lenient.stderr.splitlines()
    assert _check("--strict", str(path)).returncode == 2


@pytest.mark.parametrize(("text", "expected"), [
    # [[targets.groups]]: the second entry's key, and a missing name (the entry's header)
    ('[[targets.groups]]\nname = "w"\nurls = ["http://w.test/"]\n\n[[targets.groups]]\n'
     'name = "s"\ninterval = -5\nurls = ["http://s.test/"]\n',
     ":7: [targets] groups[2] interval: must be > 0, got -5"),
    ('[[targets.groups]]\nname = "w"\nurls = ["http://w.test/"]\n[[targets.groups]]\n'
     'urls = ["http://s.test/"]\n',
     ":4: [targets] groups[2] name: every group needs a name"),
    # inline tables in arrays, one entry per line
    ('[alerts]\nwebhooks = [\n  { url = "https://h.test/a" },\n  { url = "ftp://h.test/" },\n]\n',
     ":4: [alerts] webhooks[2] url: expected an http(s) URL, got 'ftp://h.test/'"),
    ('[network]\nanchors = [\n  { target = "tcp://192.0.2.1:443", scope = "domestic" },\n'
     '  { target = "tcp://192.0.2.2:443", scope = "abroad" },\n]\n',
     ":4: [network] anchors[2] scope: must be domestic or international, got 'abroad'"),
    ('[control]\nhelpers = [{ url = "https://h.test/" },\n'
     '           { url = "https://i.test/", tokn = "t" }]\n',
     ":3: [control] helpers[2]: unknown key 'tokn'; did you mean 'token'?"),
])
def test_lines_of_keys_in_groups_and_inline_tables(tmp_path: Path, text: str,
                                                    expected: str) -> None:
    targets = "" if "targets" in text else '[targets]\nurls = ["http://a.test/"]\n'
    path = _write(tmp_path, text + targets)
    check = check_config_file(path)
    assert check.errors == (f"{path}{expected}",)


def test_every_entry_of_an_array_is_checked(tmp_path: Path) -> None:
    """A bad group or webhook does not hide the next one's problem."""
    path = _write(tmp_path, '[targets]\n[[targets.groups]]\nname = "a"\njitter = 2\n'
                            'urls = ["http://a.test/"]\n[[targets.groups]]\nname = "b c"\n'
                            'urls = ["http://b.test/"]\n'
                            '[alerts]\nwebhooks = [{url = "x"}, {url = "https://h.test/", '
                            'format = "jsn"}]\n')
    assert [e.split(": ", 1)[1] for e in check_config_file(path).errors] == [
        "[targets] groups[1] jitter: must be a fraction from 0 to below 1",
        "[targets] groups[2] name: expected 1-32 characters of A-Z a-z 0-9 _ - (and not "
        "'default'), got 'b c'",
        "[alerts] webhooks[1] url: expected an http(s) URL, got 'x'",
        "[alerts] webhooks[2] format: must be one of json, slack, matrix, text; got 'jsn'"]


@pytest.mark.parametrize(("text", "expected"), [
    # the default a bad key falls back to is not reported as a second problem
    ("[dns]\nresolvers = [53]\n", ["[dns] resolvers: expected a list of strings"]),
    ("[helper]\ntls_cert = 5\ntls_key = 'k.pem'\n", ["[helper] tls_cert: expected str"]),
    ("[network]\nbaseline_samples = 0\nbaseline_min_samples = 50\n",
     ["[network] baseline_samples: must be >= 1"]),
    ("[control]\nhelper_url = 5\nhelper_token = 't'\n", ["[control] helper_url: expected"]),
])
def test_a_bad_value_is_one_problem_not_its_consequences(tmp_path: Path, text: str,
                                                         expected: list[str]) -> None:
    check = check_config_file(_write(tmp_path, text))
    assert len(check.errors) == len(expected), check.errors
    assert all(e in error for e, error in zip(expected, check.errors, strict=True))


HELPER_ONLY = '[helper]\nlisten = "127.0.0.1:8765"\ntoken = "secret"\n'


def test_a_helper_only_config_passes_check_config(tmp_path: Path) -> None:
    path = _write(tmp_path, HELPER_ONLY)
    result = _check("--strict", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK, a helper config (listen 127.0.0.1:8765)\n"
    assert _check("--helper", str(path)).returncode == 0


def test_a_helper_config_is_still_checked(tmp_path: Path) -> None:
    """Helper mode skips the targets, not the checks: a bad [helper] value is exit 2."""
    path = _write(tmp_path, HELPER_ONLY + "max_in_flight = 0\nallow_nets = ['x']\n")
    result = _check("--helper", str(path))
    assert result.returncode == 2
    assert sorted(result.stderr.splitlines()) == [
        f"kzprobe: error: {path}:4: [helper] max_in_flight: must be >= 1, got 0",
        f"kzprobe: error: {path}:5: [helper] allow_nets: not an IP network: 'x'"]


def test_no_targets_without_helper_is_still_an_error(tmp_path: Path) -> None:
    result = _check(str(_write(tmp_path, '[probe]\ncc = "KZ"\n')))
    assert result.returncode == 2
    assert "no usable targets" in result.stderr and "--helper" in result.stderr


# ------------------------------------------------------------------------------ positions

MARKED = [  # each text's "# <-" line is where the path is
    ('a = "x # not a comment [b]"\n[t]\nk = 1 # <-\n', ("t", "k")),
    ('[t]\ns = """\n[u]\nk = 1\n"""\nk = 2 # <-\n', ("t", "k")),
    ("[t]\ns = '''\n\"\"\"\n'''''\nk = 2 # <-\n", ("t", "k")),
    ('[t]\na."b.c".\'d\' = 1 # <-\n', ("t", "a", "b.c", "d")),
    ('[ t . "q r" ] # <-\nk = 1\n', ("t", "q r")),
    ('t.u = [[1, 2], [3,\n 4]] # <-\n', ("t", "u", 1, 1)),
    ('x = [\n  # {y = 1}\n  { y = "]},{" }, # <-\n]\n', ("x", 0, "y")),
    ('[[a]]\n[[a.b]]\n[[a]]\n[[a.b]]\n[[a.b]]\nk = 1 # <-\n', ("a", 1, "b", 1, "k")),
    ('[[a]]\nk = 1\n[[a]]\n[a.sub] # <-\nk = 2\n', ("a", 1, "sub")),
    ('[t]\nd = 1979-05-27 07:32:00Z\nk = "\\"" # <-\n', ("t", "k")),
    ('[t]\r\nk = 1\r\nj = 2 # <-\r\n', ("t", "j")),
    ('[t]\nmissing_is_at_its_table = 1\n', ("t", "nope")),
]


@pytest.mark.parametrize(("text", "path"), MARKED, ids=[str(p) for _, p in MARKED])
def test_positions_find_the_line_of_a_key(text: str, path: tuple[str | int, ...]) -> None:
    tomllib.loads(text)  # the scanner only ever reads what tomllib accepted
    lines = text.split("\n")
    marked = next((n for n, line in enumerate(lines, 1) if line.endswith("# <-")
                   or line.endswith("# <-\r")), 1)
    assert Positions(text).line(path) == marked


def test_positions_of_a_path_not_in_the_text_are_none() -> None:
    assert Positions("[t]\nk = 1\n").line(("u", "k")) is None


def _quote(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, DEL aside)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _render(value: Any) -> str:
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(k)} = {_render(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


_KEYS = st.text(min_size=1, max_size=6)
_SCALARS = st.one_of(st.integers(-10, 10), st.booleans(),
                     st.text(max_size=8) | st.sampled_from(["#", "[a]", "}", "'''", '"""']))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3),
                    st.lists(st.dictionaries(_KEYS, _SCALARS, max_size=3), max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, st.dictionaries(_KEYS, _VALUES, max_size=4), max_size=4))
def test_positions_agree_with_the_lines_of_any_document(doc: dict[str, dict[str, Any]]) -> None:
    """Any keys (quoted, with dots, quotes, '#' or brackets in them) and values: each
    table, key, entry and inline key is found on the line it was written on."""
    lines: list[str] = []
    expected: dict[tuple[str | int, ...], int] = {}
    for name, table in doc.items():
        lines.append(f"[{_quote(name)}]  # [x]")
        expected[(name,)] = len(lines)
        for key, value in table.items():
            lines.append(f"{_quote(key)} = {_render(value)}  # {_quote(key)}")
            expected[(name, key)] = len(lines)
            for index, item in enumerate(value if isinstance(value, list) else []):
                expected[(name, key, index)] = len(lines)
                for inner in item if isinstance(item, dict) else {}:
                    expected[(name, key, index, inner)] = len(lines)
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text) == doc
    positions = Positions(text)
    assert {path: positions.line(path) for path in expected} == expected
