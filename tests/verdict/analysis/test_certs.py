"""Certificate facts and known interception CAs."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from kzprobe.verdict.analysis.certs import (
    KnownCA,
    cert_facts,
    chain_facts,
    known_interception_ca,
    leaf_issuer_cn,
    load_known_cas,
)

from .builders import b64
from .pki import honest_chain, qaznet_chain, security_certificate_elsewhere


def test_facts_of_a_real_chain() -> None:
    """Issuer, subject, SANs and fingerprints are read from base64 DER entries."""
    leaf, inter, root = qaznet_chain("news.example")
    facts = chain_facts([b64(leaf), b64(inter), b64(root)])
    assert [f.subject_cn for f in facts] == ["news.example", "Security Certificate",
                                             "Qaznet Trust Network"]
    assert facts[0].issuer == {"CN": "Security Certificate", "C": "KZ"}
    assert facts[0].sans == ("news.example",)
    assert facts[0].sha256 == hashlib.sha256(leaf).hexdigest()
    assert facts[0].sha1 == hashlib.sha1(leaf).hexdigest()


def test_qaznet_chain_is_known() -> None:
    """The 2019 chain (leaf + "Security Certificate" intermediate) names Qaznet."""
    leaf, inter, _root = qaznet_chain()
    assert known_interception_ca([b64(leaf), b64(inter)]) == "Qaznet Trust Network"
    assert leaf_issuer_cn([b64(leaf), b64(inter)]) == "Security Certificate"


def test_leaf_alone_matches_by_issuer_name() -> None:
    """Even the leaf alone is recognised by its issuer "Security Certificate", C=KZ."""
    leaf, _inter, _root = qaznet_chain()
    assert known_interception_ca([b64(leaf)]) == "Security Certificate (Qaznet intermediate)"


def test_generic_name_needs_country() -> None:
    """A "Security Certificate" CA outside KZ, or an ordinary chain, is not flagged."""
    assert known_interception_ca([b64(security_certificate_elsewhere())]) is None
    assert known_interception_ca([b64(c) for c in honest_chain()]) is None


def test_fingerprint_match_beats_names() -> None:
    """A listed fingerprint identifies a certificate whatever its names say."""
    leaf, _root = honest_chain()
    digest = hashlib.sha256(leaf).hexdigest()
    cas = (KnownCA("by-name", ({"CN": "news.example"},), frozenset()),
           KnownCA("by-print", (), frozenset({digest})))
    assert known_interception_ca([b64(leaf)], cas) == "by-print"


def test_bundled_list_cites_sources() -> None:
    """The bundled CA list has the documented CAs, each citing known sources."""
    from importlib import resources
    path = resources.files("kzprobe") / "data" / "kz_interception_cas.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    names = {ca.name for ca in load_known_cas()}
    assert {"Qaznet Trust Network", "Information Security Certification Authority CA",
            "Information Security Certification Authority (ISCA)"} <= names
    for entry in data["cas"]:
        assert entry["sources"] and set(entry["sources"]) <= set(data["sources"])
    qaznet = next(ca for ca in load_known_cas() if ca.name == "Qaznet Trust Network")
    assert len(qaznet.fingerprints) == 10


def test_garbage_gives_no_facts() -> None:
    """Unparseable or malformed entries are skipped, never raised."""
    junk = [{"format": "base64", "data": "!!!"}, {"format": "base64", "data": "AAAA"}, "x", 3,
            None, {"data": "AAAA"}, b"\x30\x03\x02\x01\x00"]
    assert chain_facts(junk) == []
    assert known_interception_ca(junk) is None and leaf_issuer_cn(junk) is None
    assert chain_facts("not a list") == [] and known_interception_ca(None) is None


@given(st.binary(max_size=2048))
def test_arbitrary_der_never_raises(der: bytes) -> None:
    """Random bytes as a certificate give None (or facts, in the unlikely valid case)."""
    facts = cert_facts(der)
    assert facts is None or len(facts.sha256) == 64
    assert known_interception_ca([der, b64(der)]) is None
