"""Bounded reads of the local files a config names.

A path in a config may name /dev/zero (an endless read), a FIFO (an open() that blocks
until a writer appears, which no timeout or shutdown can interrupt) or a huge file. So:
open with O_NONBLOCK (a FIFO's open returns at once), accept only a regular file
(fstat on the open descriptor, so no swap between check and read), and read at most
``limit + 1`` bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


class LocalFileError(Exception):
    """A local file that cannot be used; the message names the file and says why."""


class MissingFileError(LocalFileError):
    """The file does not exist."""


class TooLargeError(LocalFileError):
    """The file holds more than the limit (``size``: its size, or at least limit + 1)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def read_regular(path: Path | str, limit: int, what: str) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MissingFileError(f"no such file: {path}") from None
    except OSError as exc:
        raise LocalFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the name: no file can have it
        raise LocalFileError(f"{str(path)!r}: cannot read {what}: not a file name") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LocalFileError(
                f"{path}: cannot read {what}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:  # refused before a byte is read
            raise TooLargeError(f"{path}: {what} larger than {limit} bytes", info.st_size)
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise LocalFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew since fstat
        raise TooLargeError(f"{path}: {what} larger than {limit} bytes", len(data))
    return data


def _read_at_most(fd: int, count: int) -> bytes:
    chunks: list[bytes] = []
    while count > 0:
        chunk = os.read(fd, min(count, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)
