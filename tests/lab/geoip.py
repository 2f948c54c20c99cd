"""The lab's IP-to-ASN and country databases, and a second control helper that reads them.

The plan follows the topology: the client, the ISP resolver and the ISP's boxes (blockpage
server, transparent proxy) are in 198.18.1.0/24, "Lab ISP" AS64501 in KZ; the sites, the
authoritative DNS and the helpers in 198.18.2.0/24, "Lab Internet" AS64500 in DE. The files
are written with mmdb-writer when the ``lab_geoip`` fixture is first used. The lab's first
helper has no database (so every other lab test runs the no-ASN path, kzprobe's TLS
stand-in); this one fills ``ip_info`` asn, as OONI's helpers do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.geoipdb import write_asn_db, write_country_db

from . import tomlw
from .servers import helper_sections
from .services import Service, spawn
from .topology import HELPER_IP

if TYPE_CHECKING:
    from .lab import Lab

ISP_AS, ISP_ORG, INTERNET_AS, INTERNET_ORG = 64501, "Lab ISP", 64500, "Lab Internet"
LAB_ASNS = {"198.18.1.0/24": (ISP_AS, ISP_ORG), "198.18.2.0/24": (INTERNET_AS, INTERNET_ORG)}
LAB_COUNTRIES = {"198.18.1.0/24": "KZ", "198.18.2.0/24": "DE"}
GEOIP_HELPER_PORT = 8766
# The ASN helper dials the internet only: like a helper abroad, it cannot reach the ISP's
# transparent proxy, so a reset at the proxy is seen by the probe alone (the first helper,
# allowed the whole lab, would be reset too and clear the probe's failure as "both failed").
INTERNET_NET = "198.18.2.0/24"
READY_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class LabGeoip:
    asn_db: Path
    country_db: Path
    control_url: str
    service: Service

    def sections(self) -> dict[str, dict[str, object]]:
        """Probe config sections: the databases, and this helper as the control."""
        return {"geoip": {"asn_db": str(self.asn_db), "country_db": str(self.country_db)},
                "control": {"helper_url": [self.control_url]}}


def start(lab: Lab) -> LabGeoip:
    """Write the databases and start the helper that reads them (internet namespace)."""
    asn_db = write_asn_db(lab.workdir / "lab-asn.mmdb", LAB_ASNS)
    country_db = write_country_db(lab.workdir / "lab-country.mmdb", LAB_COUNTRIES)
    listen = f"{HELPER_IP}:{GEOIP_HELPER_PORT}"
    config = lab.workdir / "helper-geoip.toml"
    sections = {**helper_sections(lab, listen), "geoip": {"asn_db": str(asn_db)}}
    sections["helper"] = {**sections["helper"], "allow_nets": [INTERNET_NET]}
    config.write_text(tomlw.dumps(sections), encoding="utf-8")
    argv = [sys.executable, "-m", "kzprobe", "helper", "--config", str(config)]
    service = spawn(lab.names.internet, "helper_geoip", argv, lab.workdir,
                    stderr_marker='"helper_listening"')
    service.wait_ready(READY_TIMEOUT)
    lab.services["helper_geoip"] = service
    return LabGeoip(asn_db, country_db, f"http://{listen}/", service)


def stop(lab: Lab, geoip: LabGeoip) -> None:
    geoip.service.stop()
    lab.services.pop("helper_geoip", None)
