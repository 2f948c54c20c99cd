"""The TLS interception box with the 2019 Qaznet chain."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kzprobe.errors import classify
from kzprobe.simnet.mitm import MitmBox
from kzprobe.simnet.pki import Pki
from kzprobe.simnet.web import WebServer

from .clients import close, https_get, no_verify, peer_chain, split, tls_connect


@pytest.fixture
async def mitm(web: WebServer, pki: Pki) -> AsyncIterator[MitmBox]:
    async with MitmBox(("127.0.0.1", 0), web.address("https"), pki.qaznet,
                       upstream_ca=pki.public.cert_pem) as box:
        yield box


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_public_trust_fails_with_unknown_authority(mitm: MitmBox,
                                                         public_ctx: ssl.SSLContext) -> None:
    """A client trusting only the public CA rejects the forged leaf: unknown issuer."""
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        await tls_connect(mitm.address, "news.demo", public_ctx)
    assert info.value.verify_code == 20  # unable to get local issuer certificate
    assert classify(info.value) == "ssl_unknown_authority"


async def test_chain_is_leaf_plus_security_certificate(mitm: MitmBox) -> None:
    """The box sends the minted leaf and the "Security Certificate" intermediate, not the root."""
    _, writer = await tls_connect(mitm.address, "news.demo", no_verify())
    chain = [x509.load_der_x509_certificate(der) for der in peer_chain(writer)]
    await close(writer)
    leaf, intermediate = chain
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert (_cn(leaf.subject), san.get_values_for_type(x509.DNSName)) == ("news.demo",
                                                                          ["news.demo"])
    assert _cn(leaf.issuer) == _cn(intermediate.subject) == "Security Certificate"
    assert _cn(intermediate.issuer) == "Qaznet Trust Network"
    assert intermediate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "KZ"
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert (key.key_size, key.public_numbers().e) == (2048, 3)


async def test_trusting_the_qaznet_root_shows_the_real_page(mitm: MitmBox, pki: Pki,
                                                            web: WebServer) -> None:
    """With the Qaznet root installed, verification passes and the real page comes through."""
    ctx = ssl.create_default_context(cadata=pki.qaznet.root_pem.decode("ascii"))
    status, _, body = split(await https_get(mitm.address, "news.demo", ctx))
    direct = split(await https_get(web.address("https"), "news.demo",
                                   pki.public.client_context()))
    assert (status, body) == (200, direct[2])
    assert [(s.name, s.upstream_ok) for s in mitm.seen] == [("news.demo", True)]


async def test_any_sni_is_minted(mitm: MitmBox) -> None:
    """Names the box never saw before, IDNA included, each get their own leaf."""
    names = []
    for sni in ("facebook.com", "xn--80aaav1a5am5es3bmc.demo"):
        _, writer = await tls_connect(mitm.address, sni, no_verify())
        names.append(_cn(x509.load_der_x509_certificate(peer_chain(writer)[0]).subject))
        await close(writer)
    assert names == ["facebook.com", "xn--80aaav1a5am5es3bmc.demo"]


async def test_unreachable_real_site_closes(pki: Pki) -> None:
    """If the real site cannot be reached, the client gets a handshake and then EOF."""
    async with MitmBox(("127.0.0.1", 0), ("127.0.0.1", 9), pki.qaznet,
                       upstream_ca=pki.public.cert_pem, connect_timeout=0.5) as box:
        reader, writer = await tls_connect(box.address, "news.demo", no_verify())
        data = await reader.read(10)
        await close(writer)
    assert data == b"" and [s.upstream_ok for s in box.seen] == [False]
