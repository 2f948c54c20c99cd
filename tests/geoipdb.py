"""MaxMind DB files for tests, the demo and the lab, made with ``mmdb-writer`` (never downloaded).

``write_asn_db`` writes the GeoLite2-ASN / DB-IP "IP to ASN Lite" schema, ``write_country_db``
the country schema (``country.iso_code``). Run as a script it regenerates the demo network's
committed database (``kzprobe/data/demo-asn.mmdb``) from :data:`DEMO_ASNS`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

REPO = Path(__file__).resolve().parents[1]
DEMO_DB = REPO / "kzprobe" / "data" / "demo-asn.mmdb"

# The demo's address plan (kzprobe/demo.py, prefix 127.0.0.): the probe dials from
# 127.0.0.1 (the "ISP" network, also its resolver .11); the sites and middleboxes (.10,
# .20-.27), the helper (.30/.50) are "the internet". The forged answer .100 has no entry.
DEMO_ASNS: dict[str, tuple[int, str]] = {
    "127.0.0.1/32": (64501, "Demo ISP"),
    "127.0.0.11/32": (64501, "Demo ISP"),
    "127.0.0.10/32": (64500, "Demo Internet"),
    "127.0.0.16/28": (64500, "Demo Internet"),
    "127.0.0.32/27": (64500, "Demo Internet"),
}


def _writer(database_type: str) -> MMDBWriter:
    return MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True,
                      description="kzprobe test data")


def write_asn_db(path: Path, networks: Mapping[str, tuple[int, str]], *,
                 database_type: str = "Test-ASN") -> Path:
    """``{cidr: (asn, organisation)}`` in the ASN schema."""
    writer = _writer(database_type)
    for cidr, (asn, org) in networks.items():
        writer.insert_network(IPSet([cidr]), {"autonomous_system_number": asn,
                                              "autonomous_system_organization": org})
    writer.to_db_file(str(path))
    return path


def write_country_db(path: Path, networks: Mapping[str, str]) -> Path:
    """``{cidr: "KZ"}`` in the country schema."""
    writer = _writer("Test-Country")
    for cidr, code in networks.items():
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path


if __name__ == "__main__":
    write_asn_db(DEMO_DB, DEMO_ASNS, database_type="kzprobe-demo-ASN")
    print(f"wrote {DEMO_DB}", file=sys.stderr)
