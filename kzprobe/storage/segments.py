"""Reading measurement segments back, whatever state the writer left them in.

The reader contract from the sink's design: a line without a trailing ``\\n`` at the end
of an open ``.part`` is a torn write in progress, not an error; anything that does not
parse is reported (file, line, reason) and skipped, never raised; no line is loaded
whole beyond a size cap, so a corrupt file cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import importlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from kzprobe.storage import codecs
from kzprobe.storage.naming import CODEC_SUFFIXES, PART_SUFFIX, SegmentFile, is_event_log

MAX_LINE_BYTES = 64 << 20
_CHUNK = 1 << 20

ErrorHandler = Callable[[Path, int, str], None]

OPEN_SUFFIX = PART_SUFFIX


def is_open(name: str) -> bool:
    """True for a segment the writer still appends to (or a crash left unpublished)."""
    return name.endswith(OPEN_SUFFIX)


class _Bad(enum.Enum):
    TOO_LONG = "too long"
    TORN = "torn"


def _ignore(path: Path, line: int, reason: str) -> None:
    """The default error handler: skip silently."""


def _kind(name: str) -> SegmentFile | None:
    """The parts of a segment file's name, or None if it is none (a ``.tmp`` is none)."""
    file = SegmentFile.parse(name)
    return file if file is not None and not file.scratch else None


def _stem(name: str) -> str:
    """The ``....ndjson`` name shared by a segment's plain, compressed and open forms."""
    kind = _kind(name)
    assert kind is not None
    return kind.plain


def _expand(path: Path, include_open: bool) -> list[Path]:
    """The segment files a path names; raises for a missing path or a non-segment file."""
    if path.is_dir():
        with os.scandir(path) as entries:
            found = [Path(e.path) for e in entries
                     if _kind(e.name) and not is_event_log(e.name) and e.is_file()]
    elif path.exists():
        if _kind(path.name) is None:
            raise ValueError(f"{path}: not a segment (.ndjson, .ndjson.gz, .ndjson.zst, .part)")
        found = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or directory")
    return [p for p in found if include_open or not is_open(p.name)]


def _choose(candidates: Iterable[Path]) -> list[Path]:
    """One file per segment (the most complete twin), sorted by name."""
    best: dict[tuple[Path, str], Path] = {}
    for path in candidates:
        key = (path.parent, _stem(path.name))
        held = best.get(key)
        if held is None or _rank_of(path) < _rank_of(held):
            best[key] = path
    return sorted(best.values(), key=lambda p: (p.name, str(p)))


def _rank_of(path: Path) -> int:
    """Preference when twins of one segment exist (lower wins): the compressed copy is
    complete by construction; a plain file may be mid-compression; a .part mid-publish."""
    kind = _kind(path.name)
    assert kind is not None
    return 2 if kind.state else 0 if kind.codec else 1


def list_segments(paths: Iterable[Path], *, include_open: bool = True) -> list[Path]:
    """Segment files in the given directories and files, one per segment, sorted by name.

    Names start with the UTC start time, so name order is time order. When a crash or a
    concurrent compression leaves twins of one segment, only the complete one is listed.
    """
    return _choose(itertools.chain.from_iterable(_expand(Path(p), include_open) for p in paths))


def _gzip_open(path: Path) -> codecs.Reader:
    """ISA-L's reader (package ``isal``, ~3x zlib's speed) where installed, else the stdlib's."""
    try:
        igzip = importlib.import_module("isal.igzip")
    except ImportError:
        return gzip.open(path, "rb")
    reader: codecs.Reader = igzip.open(path, "rb")
    return reader


def open_segment(path: Path) -> codecs.Reader:
    """A segment's decompressed stream (an open ``.part`` read as far as it goes)."""
    method = codecs.method_of(path.name)
    if method is None:
        return open(path, "rb")
    if method == "gzip" and not is_open(path.name):
        return _gzip_open(path)  # a closed member is complete: the fast reader
    raw = open(path, "rb")  # noqa: SIM115 -- closed with the reader
    return codecs.open_partial(method, raw)  # an open part has no trailer yet; zstd either way


def _split(stream: codecs.Reader, cap: int) -> Iterator[bytes | _Bad]:
    """Lines without their ``\\n``; TOO_LONG for one over ``cap``; TORN for an open tail."""
    pending = bytearray()
    over = False
    while chunk := stream.read(_CHUNK):
        *lines, tail = chunk.split(b"\n")
        if lines:
            head = lines[0]
            if over or len(pending) + len(head) > cap:
                yield _Bad.TOO_LONG
            else:
                yield bytes(pending + head) if pending else head
            pending.clear()
            over = False
            for line in itertools.islice(lines, 1, None):
                yield line if len(line) <= cap else _Bad.TOO_LONG
        if not over:
            pending += tail
            if len(pending) > cap:  # stop buffering: the rest of this line is skipped
                over = True
                pending.clear()
    if pending or over:
        yield _Bad.TORN


def iter_lines(path: Path, *, on_error: ErrorHandler | None = None,
               max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` for each complete line of one segment file.

    A torn last line is skipped: silently in an open ``.part`` (a write in progress),
    reported in a closed segment (which should never have one). Unreadable or
    over-long lines and unreadable files are reported through ``on_error``. A closed
    ``.gz`` cut short still yields every whole line before the damage (see
    :func:`_salvage_gzip`).
    """
    report = on_error if on_error is not None else _ignore
    lineno = 0
    try:
        with contextlib.closing(open_segment(path)) as stream:
            for lineno, item in enumerate(_split(stream, max_line_bytes), start=1):
                line = _checked(path, lineno, item, report, max_line_bytes)
                if line is not None:
                    yield lineno, line
    except Exception as exc:  # a reader must survive any broken file (gzip, zstd, I/O)
        if codecs.method_of(path.name) == "gzip" and not is_open(path.name):
            yield from _salvage_gzip(path, lineno, exc, report, max_line_bytes)
        else:
            report(path, lineno, f"unreadable: {type(exc).__name__}: {exc}")


def _checked(path: Path, lineno: int, item: bytes | _Bad, report: ErrorHandler,
             cap: int) -> bytes | None:
    """The line, or None after reporting why it is not one."""
    if item is _Bad.TOO_LONG:
        report(path, lineno, f"line longer than {cap} bytes")
    elif item is _Bad.TORN:
        if not is_open(path.name):
            report(path, lineno, "torn last line (no trailing newline)")
    else:
        assert isinstance(item, bytes)
        return item
    return None


def _salvage_gzip(path: Path, done: int, first: Exception, report: ErrorHandler,
                  cap: int) -> Iterator[tuple[int, bytes]]:
    """The lines after the first ``done`` of a closed ``.gz`` the fast reader gave up on.

    At a cut or corrupt member the fast reader drops everything it had decoded in that
    call (up to a megabyte: every record of a small segment). The partial reader returns
    all that decodes; the damage is one ``unreadable`` error at the line where it was
    found (the torn line it leaves is part of that damage, not a second error).
    """
    error, lineno = first, done
    try:
        with contextlib.closing(codecs.open_partial("gzip", open(path, "rb"))) as stream:
            for lineno, item in enumerate(_split(stream, cap), start=1):
                if lineno > done and item is not _Bad.TORN:
                    line = _checked(path, lineno, item, report, cap)
                    if line is not None:
                        yield lineno, line
    except Exception as exc:  # corrupt data: this reader's error is the more precise one
        error = exc
    report(path, lineno, f"unreadable: {type(error).__name__}: {error}")


def _twins(path: Path) -> list[Path]:
    """Where a segment's data may be now if ``path`` vanished (published or compressed)."""
    stem = path.with_name(_stem(path.name))
    return [stem.with_name(stem.name + s) for s in (*CODEC_SUFFIXES, "")]


def current(path: Path) -> Path:
    """``path`` itself, or the twin the writer turned it into after it was listed."""
    if path.exists() or _kind(path.name) is None:
        return path
    return next((t for t in _twins(path) if t.exists()), path)


def _collect(paths: Iterable[Path], include_open: bool, report: ErrorHandler) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        try:
            found.extend(_expand(Path(path), include_open))
        except (OSError, ValueError) as exc:
            report(Path(path), 0, str(exc))
    return _choose(found)


def iter_records(paths: Iterable[Path], *, on_error: ErrorHandler | None = None,
                 include_open: bool = True,
                 max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    """Every record (a JSON object) in the given segments and directories, in name order.

    Corrupt lines are reported as ``on_error(file, line, reason)`` and skipped; this
    never raises for bad data or missing files.
    """
    report = on_error if on_error is not None else _ignore
    for listed in _collect(paths, include_open, report):
        path = current(listed)
        for lineno, line in iter_lines(path, on_error=report, max_line_bytes=max_line_bytes):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report(path, lineno, f"invalid JSON: {exc}")
                continue
            if not isinstance(value, dict):
                report(path, lineno, f"not a JSON object: {type(value).__name__}")
                continue
            yield value
