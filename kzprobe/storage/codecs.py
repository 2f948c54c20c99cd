"""Segment compression: a stream written as records arrive, and reading one that was cut off.

The sink compresses while it writes: each batch of records ends at a flush point (gzip
``Z_SYNC_FLUSH``, a zstd block flush), so every record handed to ``os.write`` decodes
from the file even if the process dies before the trailer, and the disk sees the
compressed bytes only. (Compressing closed plain segments wrote, read back and fsynced
every byte twice; benchmarks/README.md, benchmark 3.) A file without its trailer, an open
segment or a crash's leftover, is read by :func:`open_partial`, which returns what
decodes and stops quietly where the stream ends.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from typing import Any, BinaryIO, Literal, Protocol

Method = Literal["gzip", "zstd"]

SUFFIXES: dict[Method, str] = {"gzip": ".gz", "zstd": ".zst"}
_GZIP_LEVEL = 6  # zlib's default: level 9 costs ~3x the CPU for a few percent
_ISAL_LEVEL = 2  # ISA-L's levels are 0-3; 3 halves the speed for ~5% smaller files
_ZSTD_LEVEL = 3
_READ = 1 << 20  # decoded bytes returned per read at most
_PIECE = 64 << 10  # compressed bytes decoded per call: a salvage yields <= 66 MB (1032:1)


@functools.cache
def gzip_codec() -> tuple[Any, int]:
    """The zlib-compatible module and level gzip segments are made with.

    ISA-L (the ``isal`` package) where installed: its level 2 runs ~5x faster than zlib's
    default level 6, for files ~23% larger (benchmarks/README.md). Either way the output
    is one standard gzip member.
    """
    try:
        return importlib.import_module("isal.isal_zlib"), _ISAL_LEVEL
    except ImportError:
        return zlib, _GZIP_LEVEL


def method_of(name: str) -> Method | None:
    """The compression a segment file name says (``.gz``/``.zst``, also before ``.part``)."""
    name = name.removesuffix(".part")
    for method, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            return method
    return None


class Encoder:
    """One compressed stream: :meth:`chunk` per batch (ends at a flush point), then :meth:`finish`.

    The codecs release the GIL while they compress, so the writer thread's compression
    overlaps the event loop's work.
    """

    __slots__ = ("_comp", "_flush_mode")

    def __init__(self, method: Method) -> None:
        if method == "gzip":
            module, level = gzip_codec()
            self._comp = module.compressobj(level, module.DEFLATED, 31)  # wbits 31: gzip
            self._flush_mode = module.Z_SYNC_FLUSH
        else:
            zstandard = importlib.import_module("zstandard")
            self._comp = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()
            self._flush_mode = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def chunk(self, data: bytes | memoryview) -> bytes:
        """``data`` compressed, ending where a reader can decode everything so far."""
        out: bytes = self._comp.compress(data) + self._comp.flush(self._flush_mode)
        return out

    def finish(self) -> bytes:
        """The end of the stream (gzip: the final block and the CRC/size trailer)."""
        out: bytes = self._comp.flush()
        return out


class Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


class _PartialGzip:
    """The decodable prefix of a gzip member that may lack its end (no EOFError).

    The stdlib's and ISA-L's readers raise at the missing trailer and drop the data they
    had decoded in that call, up to a megabyte; zlib drops a whole call's output at
    corrupt data (a power loss can leave zeros at the end). Here a piece that fails is
    decoded again byte by byte from a copy of the state, so everything before the damage
    is returned; the error is raised on the next read. Output per call is capped, so a
    file that decompresses hugely cannot exhaust memory.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dec = zlib.decompressobj(31)
        self._next = b""  # bytes after a member's end: the next member's start
        self._error: zlib.error | None = None

    def read(self, size: int = -1, /) -> bytes:
        limit = size if size > 0 else _READ
        while True:
            if self._error is not None:
                raise self._error
            if self._dec.eof and not self._next_member():
                return b""
            data = self._dec.unconsumed_tail or self._take_next() or self._raw.read(_PIECE)
            if not data:
                return b""
            saved = self._dec.copy()
            try:
                out = self._dec.decompress(data, limit)
            except zlib.error as exc:
                self._error, self._dec = exc, saved
                return self._salvage(data)
            if out:
                return out

    def _next_member(self) -> bool:
        """After a member's trailer: start the next member, if any bytes follow."""
        rest = self._dec.unused_data or self._raw.read(_PIECE)
        if not rest:
            return False
        self._dec, self._next = zlib.decompressobj(31), rest
        return True

    def _take_next(self) -> bytes:
        data, self._next = self._next, b""
        return data

    def _salvage(self, data: bytes) -> bytes:
        """What ``data`` yields before the byte that breaks the stream."""
        out = bytearray()
        for index in range(len(data)):
            try:
                out += self._dec.decompress(data[index:index + 1])
            except zlib.error:
                break
        return bytes(out)

    def close(self) -> None:
        self._raw.close()


def open_partial(method: Method, raw: BinaryIO) -> Reader:
    """A reader of a compressed stream that may end without its trailer.

    Raises the codec's error for corrupt data (``zlib.error``, ``zstandard.ZstdError``);
    a stream that simply ends is the end.
    """
    if method == "gzip":
        return _PartialGzip(raw)
    zstandard = importlib.import_module("zstandard")
    reader: Reader = zstandard.ZstdDecompressor().stream_reader(
        raw, read_across_frames=True, closefd=True)  # stops quietly at a truncated frame
    return reader


def decode_errors() -> tuple[type[Exception], ...]:
    """The exceptions corrupt compressed data raises, for callers that salvage a prefix."""
    errors: tuple[type[Exception], ...] = (zlib.error, EOFError)
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)
