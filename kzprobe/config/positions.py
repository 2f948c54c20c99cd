"""Where each key of a config's TOML text is, so an error can name its line.

tomllib, the parser of record, keeps no positions. This scans the text once more, lazily:
only when a problem is being reported. It reads text tomllib has already accepted and knows
just enough TOML for that: table and array-of-tables headers, dotted and quoted keys,
arrays and inline tables (their entries counted), the four kinds of string, comments.
A path is the keys and 0-based array indexes from the root, e.g.
``("alerts", "webhooks", 1, "url")`` or ``("targets", "groups", 0, "interval")``.
"""

from __future__ import annotations

import bisect
import re
import tomllib

KeyPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t]*")
_WS_NL = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")  # blanks, line ends and comments
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
# a closing delimiter may be preceded by one or two quotes of the content: """a"""""
_ML_BASIC = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*""""{0,2}', re.DOTALL)
_ML_LITERAL = re.compile(r"'''(?:[^']|'(?!''))*''''{0,2}")
_SCALAR = re.compile(r"[^,\]}\r\n#]+")  # numbers, booleans, dates: up to a delimiter


class Positions:
    """Line numbers (1-based) of the keys of one TOML text, scanned on first use."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[KeyPath, int] | None = None

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``; for a key that is not in the text (a missing one), the line
        of the nearest table or entry that holds it."""
        if self._lines is None:
            self._lines = scan(self._text)
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None


def scan(text: str) -> dict[KeyPath, int]:
    """Path -> line of its first appearance; as much as was read if the scan stops early."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (IndexError, ValueError, RecursionError):  # not TOML tomllib accepted: best effort
        pass
    return scanner.found


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.found: dict[KeyPath, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def mark(self, path: KeyPath, offset: int) -> None:
        """Note ``path`` and each table it implies, at the line of ``offset``, once."""
        line = bisect.bisect_left(self._newlines, offset) + 1
        for end in range(1, len(path) + 1):
            self.found.setdefault(path[:end], line)

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise ValueError(f"unexpected text at {self.pos}")
        self.pos = found.end()
        return found.group()

    def expect(self, token: str) -> None:
        self.match(_WS)
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def document(self) -> None:
        table: KeyPath = ()
        arrays: dict[KeyPath, int] = {}  # array of tables -> index of its current entry
        while True:
            self.match(_WS_NL)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.text.startswith("[[", start):
                self.pos += 2
                path = _resolve(self.key(), arrays)
                arrays[path] = arrays.get(path, -1) + 1
                table = (*path, arrays[path])
                self.expect("]]")
            elif self.text.startswith("[", start):
                self.pos += 1
                table = _resolve(self.key(), arrays)
                self.expect("]")
            else:
                self.key_value(table)
                continue
            self.mark(table, start)

    def key_value(self, table: KeyPath) -> None:
        start = self.pos
        path = (*table, *self.key())
        self.mark(path, start)
        self.expect("=")
        self.value(path)

    def key(self) -> tuple[str, ...]:
        """A dotted key: bare, "basic" or 'literal' parts."""
        parts: list[str] = []
        while True:
            self.match(_WS)
            char = self.text[self.pos]
            if char == '"':
                parts.append(tomllib.loads(f"k = {self.match(_BASIC)}")["k"])
            elif char == "'":
                parts.append(self.match(_LITERAL)[1:-1])
            else:
                parts.append(self.match(_BARE))
            self.match(_WS)
            if not self.text.startswith(".", self.pos):
                return tuple(parts)
            self.pos += 1

    def value(self, path: KeyPath) -> None:
        self.match(_WS)
        char = self.text[self.pos]
        if char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        elif self.text.startswith(('"""', "'''"), self.pos):
            self.match(_ML_BASIC if char == '"' else _ML_LITERAL)
        elif char in "\"'":
            self.match(_BASIC if char == '"' else _LITERAL)
        else:
            self.match(_SCALAR)

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        for index in range(len(self.text)):  # bounded: each entry takes at least a character
            self.match(_WS_NL)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self.mark((*path, index), self.pos)
            self.value((*path, index))
            self.match(_WS_NL)
            if self.text[self.pos] == ",":
                self.pos += 1

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self.match(_WS_NL)
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            self.key_value(path)
            self.match(_WS_NL)
            if self.text[self.pos] == ",":
                self.pos += 1


def _resolve(keys: tuple[str, ...], arrays: dict[KeyPath, int]) -> KeyPath:
    """A header's path, with the current entry of each array of tables on the way:
    ``[targets.groups.x]`` after the second ``[[targets.groups]]`` is in entry 1."""
    path: KeyPath = ()
    for index, key in enumerate(keys):
        path = (*path, key)
        if index < len(keys) - 1 and path in arrays:
            path = (*path, arrays[path])
    return path
