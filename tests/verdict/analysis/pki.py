"""Real certificate chains made with ``cryptography`` for the analysis tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _name(cn: str, country: str | None = None, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Issued:
    """A certificate with its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def issue(subject: x509.Name, issuer: Issued | None, *, ca: bool,
          sans: tuple[str, ...] = ()) -> Issued:
    """Sign ``subject`` with ``issuer`` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_NOW).not_valid_after(_NOW + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@cache
def qaznet_chain(host: str = "news.example") -> tuple[bytes, bytes, bytes]:
    """(leaf, intermediate, root) DER as the 2019 interceptor built them."""
    root = issue(_name("Qaznet Trust Network", "KZ"), None, ca=True)
    inter = issue(_name("Security Certificate", "KZ"), root, ca=True)
    leaf = issue(_name(host), inter, ca=False, sans=(host,))
    return leaf.der, inter.der, root.der


@cache
def honest_chain(host: str = "news.example") -> tuple[bytes, bytes]:
    """(leaf, root) DER from an ordinary, unknown CA."""
    root = issue(_name("Example Honest Root", "US", "Example Trust"), None, ca=True)
    leaf = issue(_name(host), root, ca=False, sans=(host, f"www.{host}"))
    return leaf.der, root.der


@cache
def security_certificate_elsewhere() -> bytes:
    """A CA called "Security Certificate" outside KZ: the generic name alone must not match."""
    return issue(_name("Security Certificate", "US"), None, ca=True).der
