"""``kzprobe init``: a config to start from, written without asking anything.

The text is the commented example shipped in the package (``kzprobe/data/kzprobe.example.toml``,
a link to ``config/kzprobe.toml`` in the source tree: one file documents every option). The
choices that are safe on any machine are set by editing the value on its line, so every
comment stays where it was. Pure text in, text out; the CLI writes the file.
"""

from __future__ import annotations

import re
from importlib import resources

from kzprobe.errors import KzprobeError

CONFIG_NAME = "kzprobe.toml"
EXAMPLE = "data/kzprobe.example.toml"

# (section, key, TOML value, why): what `init` changes in the example.
SAFE_CHOICES: tuple[tuple[str, str, str, str], ...] = (
    ("output", "dir", '"data"', "segments next to this file (the example: /var/lib/kzprobe)"),
    ("output", "store_bodies", '"anomalous"', "bodies only of responses that look wrong"),
    ("targets", "files", "[]", "add target lists (Citizen Lab's: config/targets/ in the "
                                 "source) or urls"),
    ("service", "metrics_listen", '"127.0.0.1:9108"', "/metrics and /healthz on loopback only"),
)

_HEADER = """\
# kzprobe configuration, written by `kzprobe init` from the commented example: every option,
# with its default. Relative paths are relative to the directory of this file. Durations are
# seconds. Validate with:  kzprobe check-config {path}
#
# `kzprobe run` and `kzprobe measure` with this file measure the real internet from this
# machine: use it where you mean to measure (a VPS inside the country you monitor).
# Changed from the example:
{changes}
"""


def example_text() -> str:
    """The commented example config, as shipped in the package."""
    return resources.files("kzprobe").joinpath(EXAMPLE).read_text(encoding="utf-8")


def set_value(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``key``'s value in ``[section]`` replaced, its trailing comment kept."""
    lines = text.splitlines(keepends=True)
    inside = False
    pattern = re.compile(rf"^({re.escape(key)}\s*=\s*)(.*?)(\s+#.*)?(\r?\n)?$", re.DOTALL)
    for index, line in enumerate(lines):
        if line.startswith("["):
            inside = line.strip() == f"[{section}]"
        elif inside and (match := pattern.match(line)):
            lines[index] = f"{match[1]}{value}{match[3] or ''}{match[4] or ''}"
            return "".join(lines)
    raise KzprobeError(f"{EXAMPLE}: no [{section}] {key} line to set (a damaged install?)")


def initial_config(path_shown: str) -> str:
    """The example with :data:`SAFE_CHOICES` applied and a header saying so."""
    text = example_text()
    for section, key, value, _ in SAFE_CHOICES:
        text = set_value(text, section, key, value)
    start = text.index("\n[") + 1  # the example's own header is about the deployment config
    changes = "\n".join(f"#   [{section}] {key} = {value}: {why}"
                        for section, key, value, why in SAFE_CHOICES)
    return _HEADER.format(path=path_shown, changes=changes) + "\n" + text[start:]
