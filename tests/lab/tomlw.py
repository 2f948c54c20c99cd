"""A tiny TOML writer for kzprobe configs (tomllib only reads)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """One ``[section]`` per top-level key; values are scalars or lists of scalars."""
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def merge(base: Mapping[str, Mapping[str, Any]],
          overrides: Mapping[str, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Section-wise merge; an override of ``None`` drops the whole section."""
    out = {name: dict(table) for name, table in base.items()}
    for name, table in overrides.items():
        if table is None:
            out.pop(name, None)
        else:
            out.setdefault(name, {}).update(table)
    return out
