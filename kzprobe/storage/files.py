"""Durable file operations the writer and recovery share: create, fsync, publish, compress."""

from __future__ import annotations

import contextlib
import errno
import importlib
import mmap
import os
from pathlib import Path
from typing import BinaryIO

from kzprobe.config import Compression
from kzprobe.errors import ConfigError
from kzprobe.storage import codecs
from kzprobe.storage.naming import CODEC_SUFFIXES, PART_SUFFIX, TMP_SUFFIX, SegmentName

COMPRESSED_SUFFIXES = codecs.SUFFIXES
_COMPRESS_CHUNK = 16 << 20  # bytes per compressor call (see _compress_stream)


FILE_MODE = 0o640  # segments and the lock: the service's group may read, nobody else
DIR_MODE = 0o750  # directories the sink creates


def create(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new file (O_EXCL), mode FILE_MODE whatever the umask (0 would give 0666)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def create_file(path: Path) -> BinaryIO:
    """:func:`create` as a binary file object (what ``open(path, "xb")`` was)."""
    return os.fdopen(create(path), "wb")


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` whose new directories are DIR_MODE whatever the umask; existing ones
    (the operator's) are left as they are."""
    missing = []
    for path in (directory, *directory.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: theirs
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (new links, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(exc: BaseException) -> str:
    """``ENOSPC: No space left on device`` for logs and ``SinkStats.last_error``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _name_taken(directory: Path, name: SegmentName) -> bool:
    """True if the published segment ``name``, plain or compressed, exists."""
    return any((directory / (name.plain + s)).exists() for s in ("", *CODEC_SUFFIXES))


def publish(part: Path) -> Path:
    """Link a closed, fsynced ``.part`` to its final name without replacing anything.

    ``os.link`` fails with EEXIST where ``rename`` would overwrite, so a name clash (a
    restart in the same second with a reused pid, e.g. pid 1 in a container) moves on
    to the next sequence number instead of destroying a closed segment.
    """
    name = SegmentName.parse(part.name)
    if name is None or name.state != PART_SUFFIX:
        raise ValueError(f"not an open segment: {part}")
    for _ in range(10_000):
        final = part.with_name(str(name.but(state="")))
        if not _name_taken(part.parent, name):
            try:
                os.link(part, final)
                break
            except FileExistsError:
                pass
        name = name.but(seq=name.seq + 1)
    else:
        raise FileExistsError(errno.EEXIST, "no free segment name", str(part))
    os.unlink(part)
    fsync_dir(part.parent)
    return final


def truncate_to_last_newline(path: Path) -> int:
    """Cut a crashed segment after its last ``\\n``; return the size kept (reads backwards)."""
    with open(path, "r+b") as fh:
        end = size = os.fstat(fh.fileno()).st_size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            found = fh.read(end - start).rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
            end = start
        if keep != size:
            fh.truncate(keep)
        os.fsync(fh.fileno())
    return keep


def require_codec(method: Compression) -> None:
    """Fail at startup, not at the first rotation, when the codec is missing."""
    if method != "zstd":
        return
    try:
        importlib.import_module("zstandard")
    except ImportError:
        raise ConfigError(
            "[output] compress = 'zstd' needs the 'zstandard' package "
            "(pip install 'kzprobe[zstd]'), or use compress = 'gzip'"
        ) from None


def _compress_stream(method: codecs.Method, src: BinaryIO, dst: BinaryIO) -> None:
    """Compress ``src`` into ``dst`` in a few large calls straight from the page cache.

    The codecs release the GIL while they work but must take it back after every call;
    with the event loop busy each retake can wait a whole switch interval (5 ms), so
    1 MiB calls ran the compressor several times slower than 16 MiB calls.
    """
    encoder = codecs.Encoder(method)
    size = os.fstat(src.fileno()).st_size
    if size:
        with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mapped, \
                memoryview(mapped) as view:
            for start in range(0, size, _COMPRESS_CHUNK):
                with view[start:start + _COMPRESS_CHUNK] as part:
                    dst.write(encoder.chunk(part))
    dst.write(encoder.finish())


def compress_segment(path: Path, method: codecs.Method) -> Path:
    """Compress a closed segment to ``path.gz``/``.zst``, then remove the plain file.

    The compressed bytes go to a ``.tmp`` that is fsynced before it gets its final name,
    so a crash never leaves a half-compressed file under a name readers trust.
    """
    final = path.with_name(path.name + COMPRESSED_SUFFIXES[method])
    tmp = final.with_name(final.name + TMP_SUFFIX)
    try:
        with open(path, "rb") as src, create_file(tmp) as dst:
            _compress_stream(method, src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    os.unlink(path)
    fsync_dir(path.parent)
    return final
