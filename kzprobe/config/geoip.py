"""The ``[geoip]`` section: MaxMind DB files for ASNs and countries, opened at load time so
``check-config`` fails where ``run`` would (a missing or unreadable file is one line)."""

from __future__ import annotations

from pathlib import Path

from kzprobe.config.model import GeoipConfig
from kzprobe.config.section import DAY, _resolve_path, _Section
from kzprobe.geoip import GeoIPError, database_type

MIN_RECHECK_SECONDS = 1.0


def _database(s: _Section, base: Path | None, key: str, label: str,
              wanted: tuple[str, ...]) -> Path | None:
    """The path ``key`` names, opened once; a file of another kind is a warning."""
    value = s.string(key, None)
    if not value:
        return None
    path = _resolve_path(base, value)
    try:
        kind = database_type(path)
    except GeoIPError as exc:
        raise s.fail(key, str(exc)) from None
    if not any(word in kind.lower() for word in wanted):
        s.warn(key, f"{path}: database_type {kind[:80]!r} does not look like {label} data")
    return path


def _parse_geoip(s: _Section, base: Path | None) -> GeoipConfig:
    d = GeoipConfig()
    return GeoipConfig(
        asn_db=_database(s, base, "asn_db", "ASN", ("asn",)),
        country_db=_database(s, base, "country_db", "country",
                             ("country", "city")),
        recheck_interval=s.number("recheck_interval", d.recheck_interval,
                                  minimum=MIN_RECHECK_SECONDS, positive=False, maximum=DAY),
    )
