"""Certificates for the simulated network: a "public" CA and the 2019 Qaznet chain.

* :class:`PublicCA` (trustme) plays the browser-trusted web PKI: every honest site's
  certificate chains to it, and its PEM is what kzprobe gets as ``tls.ca_file``.
* :class:`QaznetChain` imitates the interception chain seen in Kazakhstan in July 2019
  (IMC '20, Raman et al.): root ``C=KZ, CN=Qaznet Trust Network``, intermediate
  ``C=KZ, CN=Security Certificate``, and leaves minted on the fly for any SNI, served as
  leaf + intermediate (not the root), so an unaware client fails with "unable to get
  local issuer certificate". Differences from the original, for start-up speed: root and
  intermediate are EC P-256 (the originals were RSA-4096 and RSA-2048); leaves share one
  RSA-2048 key with public exponent 3, like the originals (which had one key per host);
  validity starts 6 hours in the past, as observed.

Key generation happens once per process (:func:`process_pki`); :meth:`Pki.write` and
:meth:`Pki.load` let separate processes (the namespace lab) share one set of files.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kzprobe.simnet.common import normalize_name

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
LeafKeyKind = Literal["rsa-e3", "ec"]

QAZNET_ROOT_CN = "Qaznet Trust Network"
QAZNET_INTERMEDIATE_CN = "Security Certificate"
ALPN = ["http/1.1"]
_CONTEXT_CACHE = 256


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _kz_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("unsupported key type")
    return key


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_cert(subject: x509.Name, key: PrivateKey, issuer: x509.Name, signer: PrivateKey,
             years: int, path_length: int | None) -> x509.Certificate:
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365 * years))
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              False))
    if issuer != subject:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False)
    return builder.sign(signer, hashes.SHA256())


def context_from_pem(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context serving ``chain_pem`` (leaf first) with ``key_pem``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(ALPN)
    with tempfile.NamedTemporaryFile(suffix=".pem") as handle:  # ssl loads from files only
        handle.write(key_pem + chain_pem)
        handle.flush()
        ctx.load_cert_chain(handle.name)
    return ctx


class PublicCA:
    """The browser-trusted CA of the simulated internet (a trustme CA)."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.ca = ca or trustme.CA(organization_name="simnet public web PKI")

    @property
    def cert_pem(self) -> bytes:
        return bytes(self.ca.cert_pem.bytes())

    @property
    def key_pem(self) -> bytes:
        return bytes(self.ca.private_key_pem.bytes())

    def issue(self, *identities: str) -> trustme.LeafCert:
        """A leaf for host names (Unicode is IDNA-encoded), IP addresses or wildcards."""
        return self.ca.issue_cert(*identities)

    def server_context(self, *identities: str) -> ssl.SSLContext:
        leaf = self.issue(*identities)
        return context_from_pem(b"".join(b.bytes() for b in leaf.cert_chain_pems),
                                leaf.private_key_pem.bytes())

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA (the probe's view)."""
        return ssl.create_default_context(cadata=self.cert_pem.decode("ascii"))


class QaznetChain:
    """The 2019 Kazakhstan interception chain: mints a leaf for any SNI on demand."""

    def __init__(self, root: x509.Certificate, intermediate: x509.Certificate,
                 intermediate_key: PrivateKey, leaf_key: PrivateKey) -> None:
        self.root, self.intermediate = root, intermediate
        self.intermediate_key, self.leaf_key = intermediate_key, leaf_key
        self._contexts: collections.OrderedDict[str, ssl.SSLContext] = collections.OrderedDict()

    @classmethod
    def generate(cls, leaf_key: LeafKeyKind = "rsa-e3") -> QaznetChain:
        root_key = ec.generate_private_key(ec.SECP256R1())
        int_key = ec.generate_private_key(ec.SECP256R1())
        root_name, int_name = _kz_name(QAZNET_ROOT_CN), _kz_name(QAZNET_INTERMEDIATE_CN)
        root = _ca_cert(root_name, root_key, root_name, root_key, 30, None)
        intermediate = _ca_cert(int_name, int_key, root_name, root_key, 3, 0)
        leaf: PrivateKey = (rsa.generate_private_key(3, 2048) if leaf_key == "rsa-e3"
                            else ec.generate_private_key(ec.SECP256R1()))
        return cls(root, intermediate, int_key, leaf)

    @property
    def root_pem(self) -> bytes:
        return _cert_pem(self.root)

    @property
    def intermediate_pem(self) -> bytes:
        return _cert_pem(self.intermediate)

    @property
    def leaf_key_pem(self) -> bytes:
        return _key_pem(self.leaf_key)

    def mint(self, name: str) -> x509.Certificate:
        """A leaf whose subject CN and SAN are ``name``, issued by "Security Certificate"."""
        name = normalize_name(name) or "invalid"
        if not name.isascii():
            name = "invalid"
        now = _now()
        return (x509.CertificateBuilder().subject_name(
                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
                .issuer_name(self.intermediate.subject).public_key(self.leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=6))
                .not_valid_after(now + dt.timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName([_general_name(name)]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate_key.public_key()), False)
                .sign(self.intermediate_key, hashes.SHA256()))

    def chain_pem(self, name: str) -> bytes:
        """What the interceptor sends: the minted leaf, then the intermediate; no root."""
        return _cert_pem(self.mint(name)) + self.intermediate_pem

    def server_context(self, name: str) -> ssl.SSLContext:
        """A server context for ``name`` (cached, bounded LRU)."""
        name = normalize_name(name) or "invalid"
        ctx = self._contexts.get(name)
        if ctx is None:
            ctx = context_from_pem(self.chain_pem(name), self.leaf_key_pem)
            self._contexts[name] = ctx
            if len(self._contexts) > _CONTEXT_CACHE:
                self._contexts.popitem(last=False)
        self._contexts.move_to_end(name)
        return ctx

    def sni_context(self, default_name: str = "localhost") -> ssl.SSLContext:
        """A server context that answers every SNI with a freshly minted leaf."""
        base = context_from_pem(self.chain_pem(default_name), self.leaf_key_pem)

        def choose(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            if server_name:
                try:
                    sslobj.context = self.server_context(server_name)
                except (ValueError, ssl.SSLError):
                    pass  # an unmintable name keeps the default leaf
            return None

        base.sni_callback = choose
        return base


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Where :meth:`Pki.write` put things. ``ca_file`` is kzprobe's ``tls.ca_file``."""

    dir: Path
    ca_file: Path
    public_ca_key: Path
    qaznet_root: Path
    qaznet_intermediate: Path
    qaznet_intermediate_key: Path
    qaznet_leaf_key: Path


_FILES = {"ca_file": "ca-bundle.pem", "public_ca_key": "public-ca.key",
          "qaznet_root": "qaznet-root.pem", "qaznet_intermediate": "qaznet-intermediate.pem",
          "qaznet_intermediate_key": "qaznet-intermediate.key",
          "qaznet_leaf_key": "qaznet-leaf.key"}


@dataclass(frozen=True, slots=True)
class Pki:
    """Both halves of the simulated PKI."""

    public: PublicCA
    qaznet: QaznetChain

    @classmethod
    def generate(cls, leaf_key: LeafKeyKind = "rsa-e3") -> Pki:
        return cls(PublicCA(), QaznetChain.generate(leaf_key))

    def write(self, directory: Path) -> PkiFiles:
        """Write PEM files (keys mode 0600) so other processes can :meth:`load` them."""
        directory.mkdir(parents=True, exist_ok=True)
        files = PkiFiles(dir=directory, **{k: directory / v for k, v in _FILES.items()})
        contents = {"ca_file": self.public.cert_pem, "public_ca_key": self.public.key_pem,
                    "qaznet_root": self.qaznet.root_pem,
                    "qaznet_intermediate": self.qaznet.intermediate_pem,
                    "qaznet_intermediate_key": _key_pem(self.qaznet.intermediate_key),
                    "qaznet_leaf_key": _key_pem(self.qaznet.leaf_key)}
        for key, data in contents.items():
            path: Path = getattr(files, key)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600 if path.suffix == ".key" else 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return files

    @classmethod
    def load(cls, directory: Path) -> Pki:
        """Read what :meth:`write` wrote (raises OSError/ValueError if incomplete)."""
        raw = {k: (directory / v).read_bytes() for k, v in _FILES.items()}
        public = PublicCA(trustme.CA.from_pem(raw["ca_file"], raw["public_ca_key"]))
        qaznet = QaznetChain(x509.load_pem_x509_certificate(raw["qaznet_root"]),
                             x509.load_pem_x509_certificate(raw["qaznet_intermediate"]),
                             _load_key(raw["qaznet_intermediate_key"]),
                             _load_key(raw["qaznet_leaf_key"]))
        return cls(public, qaznet)


@functools.cache
def process_pki() -> Pki:
    """One PKI per process: key generation is the slow part of starting the network."""
    return Pki.generate()
