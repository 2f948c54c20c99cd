"""Bearer tokens for the control helpers: given inline or in a file, checked at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kzprobe.config.section import Fail, _resolve_path
from kzprobe.localfiles import LocalFileError, read_regular

MAX_TOKEN_BYTES = 4096
_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # visible ASCII: a header value


def _check_token(fail: Fail, key: str, token: str) -> str:
    if not token or not set(token) <= _TOKEN_CHARS or len(token) > MAX_TOKEN_BYTES:
        raise fail(key, "a token must be 1-4096 visible ASCII characters (no spaces)")
    return token


def _read_token(fail: Fail, path: Path) -> str:
    """A token from a file (a systemd credential, say): bounded, one line, at the edge."""
    try:
        data = read_regular(path, MAX_TOKEN_BYTES + 1, "token file")  # + 1: a final newline
    except LocalFileError as exc:
        raise fail("token_file", str(exc)) from None
    token = data.decode("ascii", errors="replace").strip()
    if not token:
        raise fail("token_file", f"{path}: empty token file")
    return _check_token(fail, "token_file", token)


def _token(fail: Fail, base: Path | None, table: Mapping[str, Any]) -> str | None:
    """``token`` or ``token_file`` (not both) from ``table``; None when neither is set."""
    token, token_file = table.get("token"), table.get("token_file")
    for key, value in (("token", token), ("token_file", token_file)):
        if value is not None and not isinstance(value, str):
            raise fail(key, f"expected a string, got {type(value).__name__}")
    if token is not None and token_file is not None:
        raise fail("token_file", "token or token_file, not both")
    if token_file is not None:
        return _read_token(fail, _resolve_path(base, token_file))
    return None if token is None else _check_token(fail, "token", token)
