"""IP address -> (ASN, AS organisation) and country, from MaxMind DB files.

The files are the ones OONI's probes read: DB-IP "IP to ASN Lite" or GeoLite2-ASN
(``autonomous_system_number``, ``autonomous_system_organization``) and, optionally, a country
database (``country.iso_code``). They are memory-mapped (``maxminddb``'s C reader), so a
lookup costs microseconds and no read of the whole file. A monthly refresh replaces the file
on disk: every ``recheck_interval`` seconds the path is looked at again and, when it names a
new file, that is opened; a broken new file is logged and the old mapping kept, since a
lookup must never fail a measurement.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import maxminddb
import structlog

if TYPE_CHECKING:  # the config parser imports this module: no import of kzprobe.config here
    from kzprobe.config.model import GeoipConfig

log = structlog.get_logger("kzprobe.geoip")

ASN_KEY, ORG_KEY = "autonomous_system_number", "autonomous_system_organization"
MAX_ORG_CHARS = 256  # bound on a name copied into every record (the file is not ours)
_Stamp = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): "the same file"


class GeoIPError(Exception):
    """A database file that cannot be used; the message names the file and says why."""


@dataclass(frozen=True, slots=True)
class AsInfo:
    """One address's autonomous system, as the database says."""

    asn: int
    org: str

    @property
    def label(self) -> str:
        """OONI's spelling: ``AS1234``."""
        return f"AS{self.asn}"


def _stamp(path: Path) -> _Stamp:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise GeoIPError(f"{path}: not a regular file")
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_reader(path: Path) -> tuple[maxminddb.Reader, _Stamp]:
    """A reader on ``path`` and the file's stamp; :class:`GeoIPError` if unusable."""
    try:
        stamp = _stamp(path)
        return maxminddb.open_database(str(path)), stamp
    except FileNotFoundError:
        raise GeoIPError(f"no such file: {path}") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIPError(f"{path}: not a readable MaxMind DB ({exc})") from None


def database_type(path: Path) -> str:
    """The file's ``database_type`` (``DBIP-ASN-Lite (compat=GeoLite2-ASN)`` ...), checking it
    opens: what the config parser calls, so a bad file fails at load time."""
    reader, _ = open_reader(path)
    try:
        return str(reader.metadata().database_type)
    finally:
        reader.close()


class _Database:
    """One MaxMind DB file, reopened when the path names a new file (a refresh)."""

    def __init__(self, path: Path, recheck: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.recheck, self.clock = path, recheck, clock
        self._reader, self._stamp = open_reader(path)
        self._checked = clock()

    def get(self, ip: str) -> Mapping[str, Any] | None:
        """The record for ``ip`` (None: not covered, or not an address)."""
        self._maybe_reopen()
        try:
            found = self._reader.get(_unmapped(ip))
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            return None
        return found if isinstance(found, Mapping) else None

    def _maybe_reopen(self) -> None:
        now = self.clock()
        if now - self._checked < self.recheck:
            return
        self._checked = now
        try:
            if _stamp(self.path) == self._stamp:
                return
            reader, stamp = open_reader(self.path)
        except (OSError, GeoIPError) as exc:
            log.warning("geoip_reload_failed", path=str(self.path), error=str(exc)[:200])
            return
        old, self._reader, self._stamp = self._reader, reader, stamp
        old.close()
        log.info("geoip_reloaded", path=str(self.path))

    def close(self) -> None:
        self._reader.close()


def _unmapped(ip: str) -> str:
    """``::ffff:a.b.c.d`` (a dual-stack socket's peer) as ``a.b.c.d``: not every database
    aliases the mapped range to its IPv4 tree."""
    if ":" not in ip or "ffff" not in ip.lower():
        return ip
    try:
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
    except ValueError:
        return ip
    return str(mapped) if mapped is not None else ip


def _as_info(found: Mapping[str, Any] | None) -> AsInfo | None:
    number = found.get(ASN_KEY) if found is not None else None
    if found is None or not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        return None
    org = found.get(ORG_KEY)
    return AsInfo(number, org[:MAX_ORG_CHARS] if isinstance(org, str) else "")


def _iso_code(found: Mapping[str, Any] | None) -> str | None:
    country = found.get("country") if found is not None else None
    code = country.get("iso_code") if isinstance(country, Mapping) else None
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        return code.upper()
    return None


class GeoIP:
    """The configured databases; :meth:`asn` and :meth:`country` never raise."""

    def __init__(self, config: GeoipConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        every = config.recheck_interval
        self._asn = _Database(config.asn_db, every, clock) if config.asn_db else None
        self._country = (_Database(config.country_db, every, clock)
                         if config.country_db else None)

    def asn(self, ip: str) -> AsInfo | None:
        """The autonomous system announcing ``ip``; None when unknown."""
        return _as_info(self._asn.get(ip)) if self._asn is not None else None

    def country(self, ip: str) -> str | None:
        """The two-letter country of ``ip``; None when unknown or no country database."""
        return _iso_code(self._country.get(ip)) if self._country is not None else None

    def close(self) -> None:
        for db in (self._asn, self._country):
            if db is not None:
                db.close()


def open_geoip(config: GeoipConfig) -> GeoIP | None:
    """The databases ``[geoip]`` names, or None when it names none.

    The parser has opened them already; a file gone since is logged and treated as no
    database (the daemon keeps measuring, without ASNs)."""
    if config.asn_db is None and config.country_db is None:
        return None
    try:
        return GeoIP(config)
    except GeoIPError as exc:
        log.error("geoip_unavailable", error=str(exc)[:200])
        return None
