"""Typed, bounded reads from one TOML table, with errors that name file and key."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kzprobe.errors import ConfigError
from kzprobe.localfiles import LocalFileError, read_regular

# Upper bounds of numbers: every key has one, so no value makes a loop of 2**63 workers,
# an overflowing timer or a deadline nobody will see. Keys with a meaning get tighter ones.
DEFAULT_MAX_NUMBER = 1e9
DEFAULT_MAX_INTEGER = 1 << 50  # 1 PiB, as a byte count
DAY = 86400.0
MAX_TIMEOUT = DAY
MAX_BYTES = 1 << 40  # 1 TiB: a segment size, a retention budget
Fail = Callable[[str, str], ConfigError]  # (key in the table, message) -> the error


class _Section:
    """Typed reads from one TOML table, with errors that name file and key."""

    def __init__(self, where: str, name: str, table: Mapping[str, Any], *,
                 within: str = "") -> None:
        self.where = where
        self.name = name
        self.within = within  # an array-of-tables entry's label, e.g. "groups[2] "
        self.table = table
        self.used: set[str] = set()
        self.warnings: list[str] = []

    def _key(self, key: str) -> str:
        return f"{self.where}: [{self.name}] {self.within}{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self._key(key)}: expected a number, got a boolean")
        if not isinstance(value, kind):
            wanted = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigError(f"{self._key(key)}: expected {wanted}, got {type(value).__name__}")
        return value

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, positive: bool = True,
        maximum: float = DEFAULT_MAX_NUMBER,
    ) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):  # TOML has nan and inf; no deadline or rate is either
            raise ConfigError(f"{self._key(key)}: must be a finite number, got {value:g}")
        if positive and value <= minimum:
            raise ConfigError(f"{self._key(key)}: must be > {minimum:g}, got {value:g}")
        if not positive and value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum:g}, got {value:g}")
        if value > maximum:
            raise ConfigError(f"{self._key(key)}: must be <= {maximum:g}, got {value:g}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1,
                maximum: int = DEFAULT_MAX_INTEGER) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum}, got {value}")
        if value > maximum:
            raise ConfigError(f"{self._key(key)}: must be <= {maximum}, got {value}")
        return int(value)

    def string(self, key: str, default: Any) -> Any:
        return self.get(key, str, default)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, (list, str), list(default))
        if isinstance(value, str):
            value = [value]
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{self._key(key)}: expected a list of strings")
        return tuple(value)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value: str = self.string(key, default)
        if value not in allowed:
            raise ConfigError(
                f"{self._key(key)}: must be one of {', '.join(allowed)}; got {value!r}"
            )
        return value

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._key(key)}: {message}")

    def warn(self, key: str, message: str) -> None:
        """A value that works but is dangerous: check-config prints it (--strict fails)."""
        self.warnings.append(f"{self._key(key)}: {message}")

    def read_file(self, key: str, path: Path, limit: int, what: str) -> bytes:
        """A file the config names: a regular file of at most ``limit`` bytes, read now."""
        try:
            return read_regular(path, limit, what)
        except LocalFileError as exc:
            raise self.fail(key, str(exc)) from None

    def unknown_keys(self) -> list[str]:
        return [
            f"{self.where}: [{self.name}] {self.within}unknown key {k!r}"
            for k in self.table
            if k not in self.used
        ]


def _resolve_path(base: Path | None, value: str) -> Path:
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~nosuchuser/...": left as written, reported as a missing file
        pass
    if not path.is_absolute() and base is not None:
        path = base / path
    return path
