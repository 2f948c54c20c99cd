"""Segment file names: the one definition the writer, recovery, retention and reports share.

``<prefix>-<UTC start>-<probe id>-<pid>-<seq>.ndjson[.gz|.zst][.part][.tmp]``. Names start
with the start time, so name order is time order. Old segments carry a cleaned host name
(``[A-Za-z0-9._-]``, up to 64) where new ones carry the probe id; both parse. Each module
used to have its own pattern, and they disagreed on foreign files and on hyphenated ids.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime

from kzprobe.storage import codecs

SEGMENT_SUFFIX = ".ndjson"
PART_SUFFIX = ".part"
TMP_SUFFIX = ".tmp"
CODEC_SUFFIXES = tuple(codecs.SUFFIXES.values())  # .gz, .zst
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"

# Any file the reader may be handed: a stem, then the suffixes (the stem may be foreign).
_CODEC = "|".join(map(re.escape, CODEC_SUFFIXES))
_FILE = re.compile(rf"(?P<stem>.+)\.ndjson(?P<codec>{_CODEC})?(?P<state>\.part\.tmp|\.part|\.tmp)?",
                   re.DOTALL)
# What the writer puts into a stem after its prefix; the id is greedy, the pid and
# sequence are always the last two fields, so hyphens in the id are unambiguous.
_AFTER_PREFIX = (r"-(?P<stamp>\d{8}T\d{6}Z)-(?P<id>[A-Za-z0-9._-]{1,64})"
                 r"-(?P<pid>\d+)-(?P<seq>\d{6,})")


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """Any ``*.ndjson[.gz|.zst][.part][.tmp]`` file, split into stem and suffixes."""

    stem: str  # without ``.ndjson``
    codec: str = ""  # "", ".gz" or ".zst"
    state: str = ""  # "" (published), ".part" (open), ".tmp"/".part.tmp" (a copy being made)

    @classmethod
    def parse(cls, name: str) -> SegmentFile | None:
        match = _FILE.fullmatch(name)
        if match is None:
            return None
        return cls(match["stem"], match["codec"] or "", match["state"] or "")

    @property
    def scratch(self) -> bool:
        """A ``.tmp`` copy being compressed or repaired: nobody reads it, recovery removes it."""
        return self.state.endswith(TMP_SUFFIX)

    @property
    def plain(self) -> str:
        """The ``....ndjson`` name shared by a segment's plain, compressed and open forms."""
        return self.stem + SEGMENT_SUFFIX

    def __str__(self) -> str:
        return self.plain + self.codec + self.state


# The change-event log beside the segments (kzprobe.alerts writes it, kzprobe report reads
# it): one name for all, so that no reader takes a day's events for a segment of records.
EVENT_LOG = re.compile(r"events-(?P<day>\d{8})\.ndjson")


def event_log_name(unix: float) -> str:
    """The event log of ``unix``'s UTC day."""
    return time.strftime("events-%Y%m%d.ndjson", time.gmtime(unix))


def is_event_log(name: str) -> bool:
    return EVENT_LOG.fullmatch(name) is not None


@functools.lru_cache(maxsize=16)
def _stem_pattern(prefix: str | None) -> re.Pattern[str]:
    head = r"(?P<prefix>.+?)" if prefix is None else re.escape(prefix)
    return re.compile(head + _AFTER_PREFIX, re.DOTALL)


@dataclass(frozen=True, slots=True)
class SegmentName:
    """A name the writer makes: its parts, and the name again with ``str()``."""

    prefix: str
    stamp: str  # UTC start, STAMP_FORMAT
    probe_id: str  # or, in old names, the host
    pid: int
    seq: int
    codec: str = ""
    state: str = ""

    @classmethod
    def new(cls, prefix: str, probe_id: str, pid: int, seq: int, codec: str = "",
            state: str = "") -> SegmentName:
        """A name starting now."""
        stamp = time.strftime(STAMP_FORMAT, time.gmtime())
        return cls(prefix, stamp, probe_id, pid, seq, codec, state)

    @classmethod
    def parse(cls, name: str, prefix: str | None = None) -> SegmentName | None:
        """The parts of ``name``; None for a foreign file (or another ``prefix``'s)."""
        file = SegmentFile.parse(name)
        if file is None:
            return None
        match = _stem_pattern(prefix).fullmatch(file.stem)
        if match is None or _start(match["stamp"]) is None:
            return None
        return cls(prefix if prefix is not None else match["prefix"], match["stamp"],
                   match["id"], int(match["pid"]), int(match["seq"]), file.codec, file.state)

    @property
    def start(self) -> datetime:
        """When the segment was opened (naive UTC)."""
        start = _start(self.stamp)
        assert start is not None  # parse() and new() only make valid stamps
        return start

    @property
    def writer(self) -> tuple[str, str, int]:
        """Who wrote it: prefix, probe id (or host) and pid; one writer fills one at a time."""
        return self.prefix, self.probe_id, self.pid

    @property
    def scratch(self) -> bool:
        """A ``.tmp`` copy being compressed or repaired: recovery removes it."""
        return self.state.endswith(TMP_SUFFIX)

    @property
    def plain(self) -> str:
        """The published, uncompressed name (no codec, no state)."""
        return f"{self.prefix}-{self.stamp}-{self.probe_id}-{self.pid}-{self.seq:06d}" \
               f"{SEGMENT_SUFFIX}"

    def but(self, *, seq: int | None = None, state: str | None = None) -> SegmentName:
        """This name with another sequence number or state (the next try, the final name)."""
        return replace(self, seq=self.seq if seq is None else seq,
                       state=self.state if state is None else state)

    def __str__(self) -> str:
        return self.plain + self.codec + self.state


def _start(stamp: str) -> datetime | None:
    try:
        return datetime.strptime(stamp, STAMP_FORMAT)
    except ValueError:  # matched the digits, but is no date (month 13): not ours
        return None
