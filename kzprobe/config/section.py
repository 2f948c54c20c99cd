"""Typed, bounded reads from one TOML table, with errors that name file, line and key, and
the "did you mean" for a mistyped name."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kzprobe.config.positions import KeyPath, Positions
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
_T = TypeVar("_T")


class _KeyProblem(ConfigError):
    """A problem with one key; its ``label`` (``[section] key``) lets a section keep each
    key's first problem only, not the consequences of its default standing in."""

    def __init__(self, message: str, label: str) -> None:
        super().__init__(message)
        self.label = label


class _Section:
    """Typed, bounded reads from one TOML table, with errors that name file, line and key.

    A bad value is recorded in ``errors`` and the key's default returned, so the other keys
    are still checked and one run reports them all; an error that stops the section's parser
    (``raise s.fail(...)``) is recorded by the caller. ``at`` is the table's path in the
    document, which ``positions`` turns into a line.
    """

    def __init__(self, where: str, name: str, table: Mapping[str, Any], *,
                 within: str = "", at: KeyPath = (), positions: Positions | None = None) -> None:
        self.where = where
        self.name = name
        self.within = within  # an array-of-tables entry's label, e.g. "groups[2] "
        self.at: KeyPath = at or (name,)
        self.positions = positions
        self.table = table
        self.used: set[str] = set()
        self.warnings: list[str] = []
        self.errors: list[ConfigError] = []
        self._failed: set[str] = set()

    def entry(self, at: KeyPath, table: Mapping[str, Any]) -> _Section:
        """The reader of a table inside this one (``at`` from here), e.g. a group entry."""
        return _Section(self.where, self.name, table, within=f"{self.within}{_label(at)} ",
                        at=(*self.at, *at), positions=self.positions)

    def _label(self, path: KeyPath) -> str:
        return f"[{self.name}] {self.within}{_label(path)}"

    def _where(self, path: KeyPath) -> str:
        """``file:line`` of ``path`` when the text is known, else ``file``."""
        line = self.positions.line((*self.at, *path)) if self.positions else None
        return self.where if line is None else f"{self.where}:{line}"

    def fail(self, key: str | KeyPath, message: str) -> ConfigError:
        """The error for ``key``, or for a path inside it: ``("webhooks", 0, "url")``."""
        path = (key,) if isinstance(key, str) else key
        label = self._label(path)
        return _KeyProblem(f"{self._where(path)}: {label}: {message}", label)

    def record(self, error: ConfigError) -> None:
        """Keep ``error`` unless its key already has one (the first is the cause)."""
        label = error.label if isinstance(error, _KeyProblem) else str(error)
        if label not in self._failed:
            self._failed.add(label)
            self.errors.append(error)

    def failed(self, *keys: str) -> bool:
        """Whether any of ``keys`` had an error: a check across keys then proves nothing."""
        return any(self._label((key,)) in self._failed for key in keys)

    def invalid(self, key: str, message: str, default: _T) -> _T:
        """Record that ``key``'s value is wrong and go on with ``default``: a problem that
        leaves the other keys worth checking."""
        self.record(self.fail(key, message))
        return default

    def checked(self, check: Callable[[], _T], default: _T) -> _T:
        """``check()``, or ``default`` with its ConfigError recorded."""
        try:
            return check()
        except ConfigError as exc:
            self.record(exc)
            return default

    def each(self, entries: Iterable[Any], parse: Callable[[int, Any], _T]) -> list[_T]:
        """``parse(index, entry)`` of each entry of an array; one with a problem is recorded
        and left out, so the entries after it are still checked."""
        parsed = []
        for index, entry in enumerate(entries):
            try:
                parsed.append(parse(index, entry))
            except ConfigError as exc:
                self.record(exc)
        return parsed

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            return self.invalid(key, "expected a number, got a boolean", default)
        if not isinstance(value, kind):
            wanted = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            return self.invalid(key, f"expected {wanted}, got {type(value).__name__}", default)
        return value

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, positive: bool = True,
        maximum: float = DEFAULT_MAX_NUMBER,
    ) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):  # TOML has nan and inf; no deadline or rate is either
            return self.invalid(key, f"must be a finite number, got {value:g}", float(default))
        if positive and value <= minimum:
            return self.invalid(key, f"must be > {minimum:g}, got {value:g}", float(default))
        if not positive and value < minimum:
            return self.invalid(key, f"must be >= {minimum:g}, got {value:g}", float(default))
        if value > maximum:
            return self.invalid(key, f"must be <= {maximum:g}, got {value:g}", float(default))
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1,
                maximum: int = DEFAULT_MAX_INTEGER) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            return self.invalid(key, f"must be >= {minimum}, got {value}", int(default))
        if value > maximum:
            return self.invalid(key, f"must be <= {maximum}, got {value}", int(default))
        return int(value)

    def string(self, key: str, default: Any) -> Any:
        return self.get(key, str, default)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, (list, str), list(default))
        if isinstance(value, str):
            value = [value]
        if not all(isinstance(item, str) for item in value):
            return self.invalid(key, "expected a list of strings", tuple(default))
        return tuple(value)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value: str = self.string(key, default)
        if value not in allowed:
            return self.invalid(key, f"must be one of {', '.join(allowed)}; got {value!r}"
                                  f"{did_you_mean(value, allowed)}", default)
        return value

    def warn(self, key: str, message: str) -> None:
        """A value that works but is dangerous: check-config prints it (--strict fails)."""
        self.warnings.append(str(self.fail(key, message)))

    def read_file(self, key: str, path: Path, limit: int, what: str) -> bytes:
        """A file the config names: a regular file of at most ``limit`` bytes, read now."""
        try:
            return read_regular(path, limit, what)
        except LocalFileError as exc:
            raise self.fail(key, str(exc)) from None

    def unknown_keys(self, known: Iterable[str] = ()) -> list[str]:
        """A warning for each key nobody reads, with the known key it may be a typo of."""
        names = self.used | set(known)
        return [f"{self._where((k,))}: [{self.name}] {self.within}unknown key {k!r}"
                f"{did_you_mean(k, names)}" for k in self.table if k not in names]


# Words people write for a key with a short name: matched as typos of that name too.
_ALIASES = {"country": "cc", "country_code": "cc", "as_number": "asn",
            "resolver": "resolvers", "group": "groups"}


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most likely a typo of (difflib, and a few synonyms), or None."""
    names = set(choices)
    candidates = names | {alias for alias, name in _ALIASES.items() if name in names}
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    if not close:
        return None
    return close[0] if close[0] in names else _ALIASES[close[0]]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` to append to a message, or ``""``."""
    match = suggest(word, choices)
    return "" if match is None else f"; did you mean {match!r}?"


def _label(path: KeyPath) -> str:
    """``("webhooks", 0, "url")`` -> ``webhooks[1] url``: entries count from 1, as people do."""
    text = ""
    for part in path:
        text += f"[{part + 1}]" if isinstance(part, int) else f" {part}" if text else part
    return text


def _resolve_path(base: Path | None, value: str) -> Path:
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~nosuchuser/...": left as written, reported as a missing file
        pass
    if not path.is_absolute() and base is not None:
        path = base / path
    return path
