"""Retention: delete the oldest *closed* segments by total size and/or age (off by default).

Only files of this daemon's prefix are considered, and only published segments
(``.ndjson``, ``.ndjson.gz``, ``.ndjson.zst``): the open ``.part`` and the ``.tmp`` of a
compression in progress are counted towards the total but never deleted. A plain
segment is still being compressed for a while after it closes, so when compression is
on it becomes deletable only once it is clearly left over (a failed compression).
Blocking file I/O: run it in a thread.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from kzprobe.config import OutputConfig
from kzprobe.storage.naming import SegmentName

PLAIN_GRACE_SECONDS = 600.0  # a plain segment this old is not waiting for its compression


@dataclass(frozen=True, slots=True)
class Retained:
    """What one pass deleted."""

    deleted: tuple[Path, ...] = ()
    freed_bytes: int = 0
    remaining_bytes: int = 0  # this prefix's files after the pass (the open .part included)


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    size: int
    mtime: float
    name: SegmentName

    @property
    def closed(self) -> bool:
        return not self.name.state


def _scan(directory: Path, prefix: str) -> list[_File]:
    """This prefix's files, oldest name first (names start with the UTC start time)."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = SegmentName.parse(entry.name, prefix)
            if name is None:
                continue
            with contextlib.suppress(FileNotFoundError):  # compressed away meanwhile
                st = entry.stat(follow_symlinks=False)
                found.append(_File(Path(entry.path), st.st_size, st.st_mtime, name))
    return sorted(found, key=lambda f: f.path.name)


def _deletable(file: _File, output: OutputConfig, now: float) -> bool:
    if not file.closed:
        return False
    if not file.name.codec and output.compress != "none":
        return now - file.mtime > PLAIN_GRACE_SECONDS
    return True


def _victims(files: list[_File], output: OutputConfig, now: float) -> list[_File]:
    """Oldest deletable files first, until both limits hold."""
    total = sum(f.size for f in files)
    cutoff = None if output.max_age_days is None else now - output.max_age_days * 86400
    victims = []
    for file in files:
        if not _deletable(file, output, now):
            continue
        too_old = cutoff is not None and file.mtime < cutoff
        too_big = output.max_total_bytes is not None and total > output.max_total_bytes
        if too_old or too_big:
            victims.append(file)
            total -= file.size
    return victims


def enforce(output: OutputConfig, now: float) -> Retained:
    """Apply ``output.max_total_bytes`` / ``max_age_days`` once; a no-op when both are off."""
    if output.max_total_bytes is None and output.max_age_days is None:
        return Retained()
    deleted, freed = [], 0
    files = _scan(output.dir, output.prefix)
    for file in _victims(files, output, now):
        try:
            os.unlink(file.path)
        except FileNotFoundError:
            continue
        deleted.append(file.path)
        freed += file.size
    remaining = sum(f.size for f in files) - freed
    return Retained(deleted=tuple(deleted), freed_bytes=freed, remaining_bytes=remaining)
