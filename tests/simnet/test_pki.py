"""Certificates: the public CA's leaves and the Qaznet chain's files."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509

from kzprobe.simnet.pki import Pki

from .clients import close, tls_connect


def test_public_leaf_covers_idna_and_ip(pki: Pki) -> None:
    """A public leaf carries Unicode names as A-labels and IP addresses as IP SANs."""
    leaf = pki.public.issue("жаңалықтар.demo", "news.demo", "127.0.0.20")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["xn--80aaav1a5am5es3bmc.demo", "news.demo"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.20")]


def test_minted_leaf_for_an_ip_sni(pki: Pki) -> None:
    """A Qaznet leaf for an IP literal carries it as an IP SAN."""
    san = pki.qaznet.mint("127.0.0.5").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.5")]


async def test_write_then_load_round_trip(pki: Pki, tmp_path: Path) -> None:
    """Files written by one process load in another; their leaves verify to the same root."""
    files = pki.write(tmp_path / "pki")
    loaded = Pki.load(files.dir)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                        ssl=loaded.qaznet.server_context("x.demo"))
    trusting = ssl.create_default_context(cadata=pki.qaznet.root_pem.decode("ascii"))
    async with server:
        _, writer = await tls_connect(server.sockets[0].getsockname(), "x.demo", trusting)
        await close(writer)
    assert loaded.public.cert_pem == files.ca_file.read_bytes() == pki.public.cert_pem
    assert stat.S_IMODE(files.qaznet_intermediate_key.stat().st_mode) == 0o600
