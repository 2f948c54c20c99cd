"""Facts from recorded peer certificates, and known Kazakh interception CAs.

The probe records the chain the server sent (leaf first) even when verification fails, so a
forged chain can be named after the fact. Garbage in a record gives empty facts, never an
exception.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from kzprobe.verdict.analysis.records import body_bytes

MAX_CHAIN = 16  # certificates looked at per chain
MAX_DER_BYTES = 64 * 1024
_ATTRS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "C": NameOID.COUNTRY_NAME}

Name = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What one certificate says about itself."""

    subject: Name
    issuer: Name
    sans: tuple[str, ...]
    sha256: str
    sha1: str

    @property
    def issuer_cn(self) -> str | None:
        return self.issuer.get("CN")

    @property
    def subject_cn(self) -> str | None:
        return self.subject.get("CN")


def _name(name: x509.Name) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, oid in _ATTRS.items():
        values = name.get_attributes_for_oid(oid)
        if values and isinstance(values[0].value, str):
            result[key] = values[0].value
    return result


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    value = ext.value
    if not isinstance(value, x509.SubjectAlternativeName):
        return ()
    names = value.get_values_for_type(x509.DNSName)
    addresses = [str(ip) for ip in value.get_values_for_type(x509.IPAddress)]
    return (*names, *addresses)


@lru_cache(maxsize=4096)
def cert_facts(der: bytes) -> CertFacts | None:
    """Facts of one DER certificate, or None if it does not parse.

    Cached by DER (bounded): a sweep sees the same CDN and interception certificates many
    times, and parsing is the costliest step of the analysis.
    """
    if not der or len(der) > MAX_DER_BYTES:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        return CertFacts(
            subject=_name(cert.subject), issuer=_name(cert.issuer), sans=_sans(cert),
            sha256=hashlib.sha256(der).hexdigest(),
            sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest(),  # an identifier only
        )
    except Exception:  # cryptography raises assorted types on malformed DER; garbage is data
        return None


def _der(entry: Any) -> bytes:
    if isinstance(entry, bytes | bytearray):
        return bytes(entry)
    return body_bytes(entry) if isinstance(entry, Mapping) else b""


def chain_facts(chain: Any) -> list[CertFacts]:
    """Facts of every parseable certificate of a ``peer_certificates`` list (leaf first)."""
    if not isinstance(chain, Sequence) or isinstance(chain, str | bytes):
        return []
    parsed = (cert_facts(_der(entry)) for entry in list(chain)[:MAX_CHAIN])
    return [facts for facts in parsed if facts is not None]


def leaf_issuer_cn(chain: Any) -> str | None:
    """The issuer CN of the leaf (first) certificate, if it parses."""
    if not isinstance(chain, Sequence) or isinstance(chain, str | bytes) or not chain:
        return None
    facts = cert_facts(_der(chain[0]))
    return None if facts is None else facts.issuer_cn


# ----------------------------------------------------------------------------- known CAs


@dataclass(frozen=True, slots=True)
class KnownCA:
    """A certificate authority known to be used for interception."""

    name: str
    names: tuple[Name, ...]
    fingerprints: frozenset[str]


def parse_known_cas(data: Mapping[str, Any]) -> tuple[KnownCA, ...]:
    """Known CAs from the bundled JSON's ``cas`` list."""
    result = []
    for entry in data.get("cas", []):
        names = tuple({k: str(v) for k, v in item.items()} for item in entry.get("match_names", []))
        prints = frozenset(p.lower() for p in [*entry.get("sha256", []), *entry.get("sha1", [])])
        result.append(KnownCA(str(entry["name"]), names, prints))
    return tuple(result)


@cache
def load_known_cas() -> tuple[KnownCA, ...]:
    """The bundled ``kz_interception_cas.json``, read once."""
    path = Path(str(resources.files("kzprobe"))) / "data" / "kz_interception_cas.json"
    return parse_known_cas(json.loads(path.read_text(encoding="utf-8")))


def _name_matches(name: Name, wanted: Name) -> bool:
    return bool(wanted) and all(name.get(key, "").casefold() == value.casefold()
                                for key, value in wanted.items())


def _ca_matches(ca: KnownCA, facts: CertFacts) -> bool:
    if facts.sha256 in ca.fingerprints or facts.sha1 in ca.fingerprints:
        return True
    return any(_name_matches(name, wanted) for wanted in ca.names
               for name in (facts.subject, facts.issuer))


def known_interception_ca(chain: Any, cas: Iterable[KnownCA] | None = None) -> str | None:
    """Name of the known interception CA in ``chain`` (by fingerprint, else by name), or None."""
    known = tuple(load_known_cas() if cas is None else cas)
    facts = chain_facts(chain)
    for ca in known:
        if any(facts_item.sha256 in ca.fingerprints or facts_item.sha1 in ca.fingerprints
               for facts_item in facts):
            return ca.name
    for ca in known:
        if any(_ca_matches(ca, facts_item) for facts_item in facts):
            return ca.name
    return None
