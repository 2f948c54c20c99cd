"""Config defaults are defined once, by the dataclasses, and a parsed Config crosses processes.

The parsers in kzprobe/config/ read each key with a default; that default must be the
dataclass's (``d.<field>``), not a second copy of its value that can drift. The analysis
worker receives the Config pickled, so a parsed Config must unpickle in a fresh interpreter.
"""

from __future__ import annotations

import ast
import base64
import pickle
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme

from kzprobe.config import Config, parse_config
from tests.rules.source import PACKAGE, ROOT, parse

CONFIG_PACKAGE = PACKAGE / "config"
EXAMPLE = ROOT / "config" / "kzprobe.toml"
SECTION_NAMES = {"s", "section"}  # how the parsers name their _Section


def test_empty_config_is_the_default_config() -> None:
    """Parsing nothing gives exactly the dataclass defaults, with no warnings."""
    loaded = parse_config({})
    assert loaded.config == Config()
    assert loaded.warnings == ()


def _full_config(tmp: Path) -> dict[str, Any]:
    """The example config plus a value for every option that holds a path, network or peer."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    files = {name: tmp / name for name in ("ca.pem", "fp.csv", "h.crt", "h.key", "wg.key",
                                           "wg.psk")}
    for path in files.values():
        path.write_text("stub\n")
    # Files that validation loads must be real: a CA bundle, a certificate with its key, keys.
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    leaf = ca.issue_cert("helper.test")
    leaf.cert_chain_pems[0].write_to_path(str(files["h.crt"]))
    leaf.private_key_pem.write_to_path(str(files["h.key"]))
    for name in ("wg.key", "wg.psk"):
        files[name].write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    overlay: dict[str, dict[str, Any]] = {
        "probe": {"public_ip": "198.18.0.1"},
        "dns": {"resolvers": ["system", "127.0.0.1:5353", "::1"]},
        "tls": {"ca_file": str(files["ca.pem"])},
        "output": {"max_total_bytes": 1 << 30, "max_age_days": 7.5},
        "analysis": {"not_bogon": ["198.18.0.0/15", "fd00::/8"],
                     "fingerprint_files": [str(files["fp.csv"])]},
        "control": {"helper_url": ["http://127.0.0.1:8765/"], "helper_token": "t"},
        "helper": {"tls_cert": str(files["h.crt"]), "tls_key": str(files["h.key"]),
                   "allow_nets": ["127.0.0.0/24"], "bind_address": "127.0.0.1",
                   "wireguard_peers": [{"public_key": "k", "private_key_file": str(files["wg.key"]),
                                        "psk_file": str(files["wg.psk"])}]},
    }
    for name, values in overlay.items():
        data.setdefault(name, {}).update(values)
    return data


def test_parsed_config_unpickles_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """What the engine sends the analysis worker (a pickled Config) loads there unchanged."""
    loaded = parse_config(_full_config(tmp_path), where="full.toml", base=EXAMPLE.parent,
                          source=tmp_path / "full.toml")
    assert loaded.warnings == ()
    config = loaded.config
    assert config.helper.wireguard_peers and config.analysis.not_bogon and config.tls.ca_file
    assert pickle.loads(pickle.dumps(config)) == config
    code = ("import pickle, sys; "
            "sys.stdout.buffer.write(pickle.dumps(pickle.load(sys.stdin.buffer)))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(config),
                         capture_output=True, timeout=60, check=True, cwd=tmp_path)
    assert pickle.loads(out.stdout) == config


def _config_modules() -> list[Path]:
    """The modules of the kzprobe.config package."""
    return sorted(CONFIG_PACKAGE.glob("*.py"))


def _default_positions() -> dict[str, int]:
    """Callable name -> index of its ``default`` argument (a _Section method or a helper)."""
    positions = {}
    for node in (n for path in _config_modules() for n in parse(path).body):
        functions = node.body if isinstance(node, ast.ClassDef) and node.name == "_Section" \
            else [node]
        for fn in functions:
            if isinstance(fn, ast.FunctionDef):
                args = [a.arg for a in fn.args.args if a.arg != "self"]
                if "default" in args:
                    positions[fn.name] = args.index("default")
    return positions


def _callee(call: ast.Call) -> str | None:
    """``s.number(...)`` -> "number"; ``_host_port(...)`` -> "_host_port"; others None."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
            and func.value.id in SECTION_NAMES:
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _is_single_source(default: ast.expr, params: set[str]) -> bool:
    """``d.field`` (or ``str(d.field)``), ``XConfig().field``, a forwarded ``default``
    parameter, None or empty."""
    if isinstance(default, ast.Call) and isinstance(default.func, ast.Name) \
            and default.func.id in ("str", "tuple", "list") and len(default.args) == 1:
        return _is_single_source(default.args[0], params)
    if isinstance(default, ast.Attribute):
        owner = default.value
        return (isinstance(owner, ast.Name) and owner.id == "d") or (
            isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
            and owner.func.id.endswith("Config") and not owner.args)
    if isinstance(default, ast.Call) and isinstance(default.func, ast.Name) \
            and default.func.id == "getattr":
        return isinstance(default.args[0], ast.Name) and default.args[0].id == "d"
    if isinstance(default, ast.Name):
        return default.id in params and default.id == "default"
    if isinstance(default, ast.Tuple | ast.List):
        return not default.elts  # empty: "not given", like None
    return isinstance(default, ast.Constant) and default.value is None


def literal_defaults(tree: ast.Module) -> Iterator[tuple[str, str, str]]:
    """(function, key, default source) of every parser call whose default is a second copy."""
    positions = _default_positions()
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        params = {a.arg for a in fn.args.args}
        for call in ast.walk(fn):
            name = _callee(call) if isinstance(call, ast.Call) else None
            if name not in positions:
                continue
            assert isinstance(call, ast.Call)
            default = next((k.value for k in call.keywords if k.arg == "default"), None)
            if default is None and len(call.args) > positions[name]:
                default = call.args[positions[name]]
            if default is not None and not _is_single_source(default, params):
                key_arg = call.args[1 if not isinstance(call.func, ast.Attribute) else 0]
                key = key_arg.value if isinstance(key_arg, ast.Constant) else ast.unparse(key_arg)
                yield fn.name, str(key), ast.unparse(default)


def test_parsers_take_defaults_from_the_dataclasses() -> None:
    """No parser call repeats a default as a literal: each reads ``d.<field>`` (or None)."""
    found = {(fn, key): source for path in _config_modules()
             for fn, key, source in literal_defaults(parse(path))}
    assert not found, f"use d.<field> (d = XConfig()) as the default: {found}"


def test_literal_default_finder() -> None:
    """The finder flags literals (also through a helper's default parameter), not d.<field>."""
    tree = ast.parse(
        "def _parse_x(s):\n    d = XConfig()\n"
        "    return X(a=s.number('a', 1.5), b=s.integer('b', d.b), c=s.string('c', None),\n"
        "             e=_host_port(s, 'e', '127.0.0.1:1'), f=s.get('f', bool, True),\n"
        "             g=s.strings('g', ()), h=s.choice('h', d.h, ('x',)),\n"
        "             i=s.string('i', str(d.i)), j=s.string('j', str(2)))\n"
        "def _host_port(s, key, default):\n    return s.string(key, default)\n")
    # the real package's readers are seen, in whichever of its modules they live
    assert {"get", "number", "integer", "string", "strings", "choice", "_host_port",
            "_listen_ip", "_ports", "_fraction", "_alpn"} <= set(_default_positions())
    assert sorted(literal_defaults(tree)) == [
        ("_parse_x", "a", "1.5"), ("_parse_x", "e", "'127.0.0.1:1'"), ("_parse_x", "f", "True"),
        ("_parse_x", "j", "str(2)")]
