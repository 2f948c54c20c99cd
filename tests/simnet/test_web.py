"""The honest web: virtual hosts over HTTP and HTTPS, certificates chosen by SNI."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from cryptography import x509

from kzprobe.errors import classify
from kzprobe.simnet.web import WebServer, large_body

from .clients import http_get, https_get, no_verify, peer_chain, split, tls_connect


async def test_page_over_http_and_https(web: WebServer, public_ctx: ssl.SSLContext) -> None:
    """The same page is served by Host over HTTP and, with a verified cert, over HTTPS."""
    plain = split(await http_get(web.address("http"), "news.demo"))
    secure = split(await https_get(web.address("https"), "news.demo", public_ctx))
    assert plain[0] == secure[0] == 200
    assert plain[2] == secure[2]
    assert b"<title>Demo News</title>" in plain[2]
    assert len(plain[2]) > 2048  # padded like a real article, unlike a blockpage


async def test_certificate_chosen_by_sni(web: WebServer) -> None:
    """Each SNI gets its own leaf; an unknown SNI gets the server-IP certificate."""
    names = {}
    for sni in ("vpn.demo", "other.example"):
        _, writer = await tls_connect(web.address("https"), sni, no_verify())
        leaf = x509.load_der_x509_certificate(peer_chain(writer)[0])
        names[sni] = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        writer.close()
    assert names["vpn.demo"].get_values_for_type(x509.DNSName) == ["vpn.demo"]
    assert [str(ip) for ip in names["other.example"].get_values_for_type(x509.IPAddress)] \
        == ["127.0.0.1"]


async def test_unknown_sni_fails_verification(web: WebServer, public_ctx: ssl.SSLContext) -> None:
    """A verifying client asking for a name the server does not host sees a hostname error."""
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        await tls_connect(web.address("https"), "other.example", public_ctx)
    assert classify(info.value) == "ssl_invalid_hostname"


async def test_idna_site(web: WebServer, public_ctx: ssl.SSLContext) -> None:
    """An IDNA site is served under its A-label, with a certificate for it."""
    raw = await https_get(web.address("https"), "xn--80aaav1a5am5es3bmc.demo", public_ctx)
    assert "<title>Жаңалықтар</title>" in split(raw)[2].decode()


async def test_redirect_chain_across_hosts(web: WebServer) -> None:
    """r1 -> r2 -> r3 -> news: three 302 hops keeping scheme and port."""
    port = web.address("http")[1]
    resolver = _StaticResolver("127.0.0.1")
    connector = aiohttp.TCPConnector(resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(f"http://r1.demo:{port}/", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        body = await resp.text()
        hops = [str(r.url) for r in resp.history]
    assert hops == [f"http://r{i}.demo:{port}/" for i in (1, 2, 3)]
    assert (resp.status, "<title>Demo News</title>" in body) == (200, True)


async def test_large_file_is_streamed_exactly(web: WebServer) -> None:
    """The large site streams exactly `size` bytes with a matching Content-Length."""
    status, headers, body = split(await http_get(web.address("http"), "large.demo", "/f.bin"))
    assert (status, int(headers["content-length"])) == (200, 3 * 1024 * 1024 + 17)
    assert body == large_body(3 * 1024 * 1024 + 17)


async def test_echo_site_shows_client_ip(web: WebServer) -> None:
    """The echo site puts the client's address in the body and in X-Client-IP."""
    _, headers, body = split(await http_get(web.address("http"), "echo.demo"))
    assert headers["x-client-ip"] == "127.0.0.1"
    assert b"Your IP address is 127.0.0.1" in body


@pytest.mark.parametrize(("host", "path"), [("missing.demo", "/"), ("news.demo", "/nope"),
                                            ("unknown.demo", "/")])
async def test_honest_404(web: WebServer, host: str, path: str) -> None:
    """A not-found site, an unknown path and an unknown Host all give a plain 404."""
    status, _, body = split(await http_get(web.address("http"), host, path))
    assert (status, b"404 Not Found" in body) == (404, True)


async def test_site_headers_and_reload(web: WebServer) -> None:
    """Per-site headers are sent; sites can be replaced at run time from JSON."""
    _, headers, _ = split(await http_get(web.address("http"), "headers.demo"))
    web.load_rules([{"name": "fresh.demo", "title": "Fresh"}])
    fresh = split(await http_get(web.address("http"), "fresh.demo"))
    gone = split(await http_get(web.address("http"), "news.demo"))
    assert (headers["x-site"], headers["server"]) == ("headers", "simnet")
    assert (fresh[0], gone[0]) == (200, 404)


class _StaticResolver(aiohttp.abc.AbstractResolver):
    """Resolves every name to one loopback address (no real DNS is ever asked)."""

    def __init__(self, ip: str) -> None:
        self.ip = ip

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, object]]:
        return [{"hostname": host, "host": self.ip, "port": port, "family": 2, "proto": 0,
                 "flags": 0}]

    async def close(self) -> None:
        return None
