"""ASNs in the probe's records, and where the probe itself is (``[geoip]``).

With an ASN database, every record gets what OONI's probes write: ``asn``/``as_org_name`` on
each DNS answer, ``resolver_asn``/``resolver_network_name`` for ``resolver_ip``. And the
probe locates itself: ``probe_asn``, ``probe_network_name`` (and ``probe_cc`` with a country
database) of the address the control helper saw (``x_client_ip``), for each of those three
that ``[probe]`` leaves at its default. The control's ``ip_info`` ASNs a helper without a
database left at 0 are filled from the probe's. Every helper answer re-checks it, so a VPS moved to
another network is noticed at its next measurement; the first location and every change are
logged (never the address). A value ``[probe]`` sets that disagrees stays in the record, with
the detected one beside it in ``x_probe_detected``, and is logged once as a warning.

Runs on the pipeline's loop, before the record is judged (the analysis reads the ASNs) and
scrubbed (``x_client_ip`` is the address the scrubber removes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from kzprobe.config import Config
from kzprobe.geoip import GeoIP, open_geoip

log = structlog.get_logger("kzprobe.verdict.locate")

UNSET = {"probe_asn": "AS0", "probe_cc": "ZZ", "probe_network_name": ""}  # OONI's "unknown"
MAX_ANSWERS_ANNOTATED = 256  # per query; the probe stores at most 64


@dataclass(frozen=True, slots=True)
class Location:
    """The probe's network as the databases place the address a helper reported."""

    probe_asn: str | None  # None: no ASN database, or it does not know the address
    probe_network_name: str | None
    probe_cc: str | None  # None: no country database, or it does not know the address

    def fields(self) -> dict[str, str]:
        """The record's top-level fields this location can fill (those that are known)."""
        found = {"probe_asn": self.probe_asn, "probe_network_name": self.probe_network_name,
                 "probe_cc": self.probe_cc}
        return {key: value for key, value in found.items() if value is not None}


def annotate_answers(queries: Any, geo: GeoIP) -> None:
    """``asn`` and ``as_org_name`` of every A/AAAA answer (0 and "" stay where unknown)."""
    for query in queries if isinstance(queries, list) else ():
        answers = query.get("answers") if isinstance(query, dict) else None
        for answer in (answers if isinstance(answers, list) else ())[:MAX_ANSWERS_ANNOTATED]:
            ip = answer.get("ipv4") or answer.get("ipv6") if isinstance(answer, dict) else None
            info = geo.asn(ip) if isinstance(ip, str) else None
            if info is not None:
                answer["asn"], answer["as_org_name"] = info.asn, info.org


def annotate_control(control: Any, geo: GeoIP) -> None:
    """``asn`` of the control's ``ip_info`` entries the helper left at 0 (a helper without a
    database): the probe's own database knows them, and OONI's IP-or-ASN rule needs them."""
    ip_info = control.get("ip_info") if isinstance(control, dict) else None
    for ip, entry in list(ip_info.items())[:MAX_ANSWERS_ANNOTATED] \
            if isinstance(ip_info, dict) else ():
        if isinstance(entry, dict) and not entry.get("asn"):
            info = geo.asn(ip) if isinstance(ip, str) else None
            if info is not None and info.asn:
                entry["asn"] = info.asn


def reported_address(test_keys: Mapping[str, Any]) -> str | None:
    """The probe's address as a kzprobe helper saw it (``control.x_client_ip``)."""
    control = test_keys.get("control")
    address = control.get("x_client_ip") if isinstance(control, Mapping) else None
    return address if isinstance(address, str) else None


class Locator:
    """Puts ASNs into records and keeps the probe's detected location (owned by the
    pipeline; ``geo`` is passed by tests, else opened from ``[geoip]``)."""

    def __init__(self, config: Config, geo: GeoIP | None = None) -> None:
        probe = config.probe
        self.configured = {"probe_asn": probe.asn, "probe_cc": probe.cc,
                           "probe_network_name": probe.network_name}
        self.geo = geo if geo is not None else open_geoip(config.geoip)
        self.location: Location | None = None
        self._warned: set[tuple[str, str]] = set()
        if self.geo is not None:
            log.info("geoip_ready", asn_db=str(config.geoip.asn_db or ""),
                     country_db=str(config.geoip.country_db or ""),
                     detects=sorted(k for k, v in self.configured.items() if v == UNSET[k]))

    def annotate(self, record: dict[str, Any]) -> None:
        """Fill ``record``'s ASN fields and probe location in place (no database: no-op)."""
        keys = record.get("test_keys")
        if self.geo is None or not isinstance(keys, dict):
            return
        annotate_answers(keys.get("queries"), self.geo)
        annotate_control(keys.get("control"), self.geo)
        self._resolver(record)
        address = reported_address(keys)
        if address is not None:
            self.observe(address)
        if self.location is not None:
            self._place(record, self.location)

    def _resolver(self, record: dict[str, Any]) -> None:
        ip = record.get("resolver_ip")
        info = self.geo.asn(ip) if self.geo is not None and isinstance(ip, str) and ip else None
        if info is not None:
            record["resolver_asn"], record["resolver_network_name"] = info.label, info.org

    def observe(self, address: str) -> Location | None:
        """Locate ``address`` (the probe's, per a helper); log the first location and changes."""
        assert self.geo is not None
        info, country = self.geo.asn(address), self.geo.country(address)
        found = None if info is None and country is None else Location(
            info.label if info else None, info.org if info else None, country)
        if found != self.location:
            _log_change(self.location, found)
            self.location = found
        return found

    def _place(self, record: dict[str, Any], location: Location) -> None:
        detected: dict[str, str] = {}
        for key, value in location.fields().items():
            mine = self.configured[key]
            if mine == UNSET[key]:
                record[key] = value
            elif mine != value:
                detected[key] = value
                self._warn(key, mine, value)
        if detected:
            record["x_probe_detected"] = detected

    def _warn(self, key: str, configured: str, detected: str) -> None:
        if (key, detected) not in self._warned:
            self._warned.add((key, detected))
            log.warning("probe_location_differs", key=key, configured=configured,
                        detected=detected)

    def adopt(self, other: Locator) -> None:
        """Carry over the location ``other`` found (a reload replaces the pipeline)."""
        if self.location is None:
            self.location = other.location

    def close(self) -> None:
        if self.geo is not None:
            self.geo.close()


def _log_change(before: Location | None, after: Location | None) -> None:
    if after is None:
        log.warning("probe_location_unknown", note="the ASN database has no entry for the "
                    "address the helper reported")
    elif before is None:
        log.info("probe_located", **after.fields())
    else:
        log.warning("probe_location_changed", before=before.fields(), after=after.fields())
