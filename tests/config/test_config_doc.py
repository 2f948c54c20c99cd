"""The commented example config documents every option, and is itself valid."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from kzprobe.config import Config, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "kzprobe.toml"
# Dataclass fields whose TOML key is spelled differently.
KEY_NAMES = {("control", "helper_urls"): "helper_url"}


def _documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per section, set or commented out (``# key = ...``)."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        array = re.match(r"^#?\s?\[\[(\w+)\.(\w+)\]\]", line)  # [[targets.groups]]
        if array:
            keys.setdefault(array.group(1), set()).add(array.group(2))
            continue
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
            keys.setdefault(section, set())
            continue
        key = re.match(r"^#?\s?(\w+)\s*=", line)
        if key and section:
            keys[section].add(key.group(1))
    return keys


def test_every_option_is_documented_in_the_example() -> None:
    """Each field of each config section appears (set or commented) in config/kzprobe.toml."""
    documented = _documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    missing = []
    for section in fields(Config):
        if section.name == "source":
            continue
        for option in fields(getattr(Config(), section.name)):
            key = KEY_NAMES.get((section.name, option.name), option.name)
            if key not in documented.get(section.name, set()):
                missing.append(f"[{section.name}] {key}")
    assert missing == []


def test_example_config_is_valid_without_warnings() -> None:
    """The example parses cleanly: no unknown keys."""
    loaded = load_config(EXAMPLE)
    assert loaded.warnings == ()
