"""Startup: lock the output directory, repair and publish what a crash left, the probe id."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from kzprobe.config import MAX_PROBE_ID, valid_probe_id
from kzprobe.errors import KzprobeError
from kzprobe.storage import codecs
from kzprobe.storage.files import (
    FILE_MODE,
    create_file,
    describe,
    fsync_dir,
    make_dirs,
    publish,
    truncate_to_last_newline,
)
from kzprobe.storage.naming import CODEC_SUFFIXES, PART_SUFFIX, TMP_SUFFIX, SegmentName
from kzprobe.storage.segments import MAX_LINE_BYTES

log = structlog.get_logger("kzprobe.storage.sink")

PROBE_ID_FILE = ".probe-id"  # in the output dir: the random id used when none is configured


@dataclass(frozen=True, slots=True)
class Recovery:
    """What startup recovery found: published leftovers and plain segments to compress."""

    published: tuple[Path, ...]
    uncompressed: tuple[Path, ...]


def _ours(directory: Path, prefix: str) -> dict[Path, SegmentName]:
    """Segment files of this prefix only: prefix ``kz`` must not claim ``kz-b-...`` files."""
    found = {}
    for path in directory.iterdir():
        name = SegmentName.parse(path.name, prefix)
        if name is not None:
            found[path] = name
    return found


def _recover_part(part: Path) -> Path | None:
    """Trim a crashed ``.part`` to whole records and publish it; drop it if nothing is left."""
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    if final.exists() and os.path.samefile(part, final):  # crashed between link and unlink
        os.unlink(part)
        fsync_dir(part.parent)
        return final
    method = codecs.method_of(part.name)
    kept = truncate_to_last_newline(part) if method is None else _repair_stream(part, method)
    if kept == 0:
        os.unlink(part)
        return None
    return publish(part)


def _repair_stream(part: Path, method: codecs.Method) -> int:
    """Make a crashed compressed ``.part`` one complete stream of its whole records.

    Its batches ended at flush points, so everything written decodes; what is missing
    is the trailer, and perhaps part of a batch. The whole records are compressed anew
    to a ``.tmp`` that then replaces the part. Returns the uncompressed bytes kept.
    """
    tmp = part.with_name(part.name + TMP_SUFFIX)
    try:
        with open(part, "rb") as raw, create_file(tmp) as dst:
            kept = _recompress_whole_lines(codecs.open_partial(method, raw), dst,
                                           codecs.Encoder(method))
            dst.flush()
            os.fsync(dst.fileno())
        if kept:
            os.replace(tmp, part)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return kept


def _recompress_whole_lines(reader: codecs.Reader, dst: BinaryIO, encoder: codecs.Encoder) -> int:
    """Copy the decodable whole lines of ``reader`` into ``dst`` through ``encoder``.

    Corrupt data ends the copy like the end of the file does: what came before it is kept.
    """
    kept, carry = 0, b""
    with contextlib.suppress(*codecs.decode_errors()):
        while len(carry) <= MAX_LINE_BYTES and (chunk := reader.read(1 << 20)):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                dst.write(encoder.chunk(memoryview(data)[:cut]))
                kept += cut
            carry = data[cut:]
    if kept:
        dst.write(encoder.finish())
    return kept


def _recover_or_defer(part: Path) -> Path | None:
    """``_recover_part``, except that a full disk leaves the part for a later start.

    Repairing a compressed part writes a copy of it; with no room for that the sink must
    still start (and wait for space like any write), not fail.
    """
    try:
        return _recover_part(part)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("sink_recovery_deferred", path=str(part), error=describe(exc))
        return None


def _plain_leftovers(directory: Path, prefix: str) -> list[Path]:
    """Plain segments still to compress; those with a complete compressed twin are removed."""
    todo = []
    ours = _ours(directory, prefix)
    for plain in sorted(p for p, name in ours.items() if not (name.codec or name.state)):
        twins = [plain.with_name(plain.name + s) for s in CODEC_SUFFIXES]
        if any(t.exists() for t in twins):
            os.unlink(plain)  # twins are linked only after fsync: the twin is complete
        else:
            todo.append(plain)
    return todo


def recover_dir(directory: Path, prefix: str) -> Recovery:
    """Clean up after a crash: remove ``*.tmp``, publish ``*.part``, find uncompressed segments."""
    ours = _ours(directory, prefix)
    for tmp in sorted(p for p, name in ours.items() if name.scratch):
        os.unlink(tmp)
    parts = sorted(p for p, name in ours.items() if name.state == PART_SUFFIX)
    published = [p for part in parts if (p := _recover_or_defer(part)) is not None]
    todo = _plain_leftovers(directory, prefix)
    fsync_dir(directory)
    return Recovery(published=tuple(published), uncompressed=tuple(todo))


def lock_dir(directory: Path, prefix: str) -> int:
    """Create the directory and take an exclusive lock so two writers never share a prefix.

    The lock file is opened read-only: it must not count as a writer, or a read-only
    remount of the results filesystem would fail with EBUSY.
    """
    try:
        make_dirs(directory)
        fd = os.open(directory / f".{prefix}.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                     FILE_MODE)
    except OSError as exc:
        raise KzprobeError(f"{directory}: cannot use output directory: {describe(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise KzprobeError(
            f"{directory}: another kzprobe process is writing segments with prefix {prefix!r}"
        ) from None
    return fd


def resolve_probe_id(directory: Path) -> str:
    """The probe id stored in ``directory``, made (at random) and stored on first use.

    Segment names used to carry the host name, which often is the address the records are
    scrubbed of. Two writers racing on one directory agree: the id is published with
    ``link``, which fails for the loser, who then reads the winner's.
    """
    path = directory / PROBE_ID_FILE
    try:
        try:
            return _read_probe_id(path)
        except FileNotFoundError:
            _store_probe_id(directory, path)
            return _read_probe_id(path)
    except OSError as exc:
        raise KzprobeError(f"{path}: cannot read or store the probe id: {describe(exc)}"
                           ) from None


def _read_probe_id(path: Path) -> str:
    # O_NONBLOCK: a FIFO put here must not hang the start; only a regular file is read
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KzprobeError(f"{path}: not a regular file; remove it or set [probe] id")
        data = os.read(fd, MAX_PROBE_ID + 2)  # an id, a newline, and one byte to see more
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if not valid_probe_id(text):
        raise KzprobeError(f"{path}: not a probe id (1-{MAX_PROBE_ID} of A-Z a-z 0-9 _ -); "
                           "remove it (a new one is made) or set [probe] id")
    return text


def _store_probe_id(directory: Path, path: Path) -> None:
    tmp = directory / f"{PROBE_ID_FILE}.{os.getpid()}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o640)
    try:
        os.fchmod(fd, 0o640)  # whatever the umask
        os.write(fd, secrets.token_hex(6).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another writer stored one first: theirs is the id
        pass
    finally:
        os.unlink(tmp)
    fsync_dir(directory)
