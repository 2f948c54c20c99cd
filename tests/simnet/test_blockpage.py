"""The transparent blockpage proxy and the blockpage server."""

from __future__ import annotations

import re

from kzprobe.simnet.blockpage import BlockpageProxy
from kzprobe.simnet.web import WebServer

from .clients import http_get, split

# Censored Planet blockpage_signatures.json, fingerprints d_corp_kz_ps and f_gen_ru_8_satellite
CP_PATTERNS = {"d_corp_kz_ps": "Страница заблокирована",
               "f_gen_ru_8_satellite": "Ресурста ақпараттық қауіпсіздікке төнетін қауіп-қатер бар",
               "f_gen_ru_16_satellite": "<title>Страница заблокирована</title>"}


async def test_blocked_host_gets_the_blockpage(web: WebServer) -> None:
    """A blocked Host gets a page that real blockpage fingerprints match."""
    async with BlockpageProxy(("127.0.0.1", 0), web.address("http"), ("vpn.demo",)) as proxy:
        status, headers, body = split(await http_get(proxy.address, "vpn.demo"))
    text = body.decode("utf-8")
    assert (status, headers["connection"]) == (200, "close")
    assert all(re.search(p, text) for p in CP_PATTERNS.values())
    assert "Free VPN" not in text


async def test_other_hosts_pass_byte_for_byte(web: WebServer) -> None:
    """An unblocked Host gets exactly the upstream's bytes (a large file, checked whole)."""
    async with BlockpageProxy(("127.0.0.1", 0), web.address("http"), ("vpn.demo",)) as proxy:
        via_proxy = await http_get(proxy.address, "large.demo")
    direct = await http_get(web.address("http"), "large.demo")
    drop_date = re.compile(rb"Date: [^\r]*\r\n")
    assert drop_date.sub(b"", via_proxy) == drop_date.sub(b"", direct)
    assert len(via_proxy) > 3 * 1024 * 1024


async def test_blockpage_server_answers_any_host() -> None:
    """Without an upstream (a DNS-redirect target) every Host gets the blockpage."""
    async with BlockpageProxy(("127.0.0.1", 0), None) as server:
        pages = [split(await http_get(server.address, host)) for host in ("a.demo", "b.demo")]
    assert all(CP_PATTERNS["d_corp_kz_ps"] in body.decode() for _, _, body in pages)
