"""kzprobe.demo.DemoNetwork: starts fast, each target does what it says, stops clean."""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE

from kzprobe.config import parse_config
from kzprobe.demo import DemoNetwork
from kzprobe.errors import classify
from kzprobe.simnet.common import HostPort, normalize_name, parse_hostport
from kzprobe.simnet.dns import query
from kzprobe.simnet.pki import Pki

from .clients import close, http_get, https_get, split, tls_connect


@pytest.fixture
async def net(pki: Pki) -> AsyncIterator[DemoNetwork]:
    async with DemoNetwork(pki=pki) as network:
        yield network


async def _resolve(name: str, resolver: str) -> tuple[int, list[str]]:
    reply = await query(name, "A", parse_hostport(resolver))
    return reply.header.rcode, [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


async def _endpoint(net: DemoNetwork, url: str) -> tuple[str, HostPort]:
    """(A-label host, address) of a target as the ISP resolver sends the probe."""
    host, port = url.split("://")[1].rstrip("/").rsplit(":", 1)
    name = normalize_name(host)
    _, ips = await _resolve(name, net.isp_resolver)
    return name, (ips[0], int(port))


def _target(net: DemoNetwork, name: str) -> str:
    return next(t.url for t in net.targets if f"//{name}:" in t.url)


async def _run_once(pki: Pki) -> tuple[float, Path]:
    t0 = time.perf_counter()
    async with DemoNetwork(pki=pki) as network:
        started = time.perf_counter() - t0
        await https_get(parse_hostport(network.addresses()["web"]["https"]), "news.demo",
                        pki.public.client_context())
    return started, network.workdir


async def test_starts_fast_and_stops_without_leaks(pki: Pki) -> None:
    """Start-up takes well under 2 s; after stop no task, socket or temp dir is left."""
    first, _ = await _run_once(pki)  # also warms up loop internals (uvloop opens /dev/null once)
    fds_before = len(os.listdir("/proc/self/fd"))
    tasks_before = asyncio.all_tasks()
    second, workdir = await _run_once(pki)
    await asyncio.sleep(0)
    assert max(first, second) < 2.0
    assert asyncio.all_tasks() == tasks_before
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert not workdir.exists()


async def test_targets_and_config(net: DemoNetwork, tmp_path: Path) -> None:
    """About a dozen targets on two shared ports; the TOML parses cleanly with kzprobe's
    config."""
    loaded = parse_config(tomllib.loads(net.config_toml(tmp_path / "out")))
    web = [t for t in net.targets if t.url.startswith("http")]  # not the dot:// endpoint
    ports = {t.url.rsplit(":", 1)[1] for t in web}
    assert 8 <= len(net.targets) <= 15 and ports == {f"{net.http_port}/", f"{net.https_port}/"}
    assert loaded.warnings == ()
    assert loaded.config.targets.urls == tuple(t.url for t in net.targets)
    assert loaded.config.tls.ca_file == net.ca_file and net.ca_file.is_file()
    assert str(loaded.config.dns.resolvers[0]) == net.isp_resolver
    assert loaded.config.timeouts.tls <= 2.0


async def test_fine_sites(net: DemoNetwork) -> None:
    """The fine HTTP, HTTPS and IDNA targets load with the probe's trust store."""
    ctx = ssl.create_default_context(cafile=str(net.ca_file))
    name, address = await _endpoint(net, _target(net, "plain.demo"))
    plain = split(await http_get(address, name))
    statuses = [plain[0]]
    for site in ("news.demo", "жаңалықтар.demo"):
        name, address = await _endpoint(net, _target(net, site))
        statuses.append(split(await https_get(address, name, ctx))[0])
    assert statuses == [200, 200, 200]


async def test_dns_lies_differ_from_honest(net: DemoNetwork) -> None:
    """The ISP says NXDOMAIN / a bogon 127.0.0.100 where the honest resolver has the site."""
    isp = [await _resolve(n, net.isp_resolver) for n in ("opposition.demo", "rights.demo")]
    honest = [await _resolve(n, net.honest_resolver) for n in ("opposition.demo", "rights.demo")]
    web_ip = parse_hostport(net.addresses()["web"]["http"])[0]
    assert isp == [(RCODE.NXDOMAIN, []), (RCODE.NOERROR, ["127.0.0.100"])]
    assert honest == [(RCODE.NOERROR, [web_ip]), (RCODE.NOERROR, [web_ip])]
    with pytest.raises(ConnectionRefusedError):
        await http_get(("127.0.0.100", net.https_port), "rights.demo")


async def test_sni_blocking_targets(net: DemoNetwork) -> None:
    """vpn.demo is reset, media.demo times out, radio.demo is slow but completes."""
    ctx = ssl.create_default_context(cafile=str(net.ca_file))
    name, address = await _endpoint(net, _target(net, "vpn.demo"))
    with pytest.raises(ConnectionResetError) as reset:
        await tls_connect(address, name, ctx)
    name, address = await _endpoint(net, _target(net, "media.demo"))
    with pytest.raises(TimeoutError):
        await tls_connect(address, name, ctx, timeout=0.5)
    name, address = await _endpoint(net, _target(net, "radio.demo"))
    t0 = time.perf_counter()
    _, writer = await tls_connect(address, name, ctx)
    slow = time.perf_counter() - t0
    await close(writer)
    assert reset.value.errno == errno.ECONNRESET
    assert 1.2 <= slow < 2.0


async def test_outside_vantage_is_not_censored(net: DemoNetwork) -> None:
    """From the helper's source address every middlebox passes traffic untouched."""
    ctx = ssl.create_default_context(cafile=str(net.ca_file))
    for host in ("vpn.demo", "media.demo", "social.demo"):
        name, address = await _endpoint(net, _target(net, host))
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            *address, ssl=ctx, server_hostname=name,
            local_addr=(net.outside_address, 0)), 5)
        writer.write(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        await close(writer)
        assert answer.split(b"\r\n")[0].endswith(b" 200 OK"), host
    name, address = await _endpoint(net, _target(net, "blocked.demo"))
    reader, writer = await asyncio.open_connection(*address, local_addr=(net.outside_address, 0))
    writer.write(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
    page = await asyncio.wait_for(reader.read(), 5)
    await close(writer)
    assert b"Citizen Forum" in page


async def test_blockpage_mitm_and_down(net: DemoNetwork) -> None:
    """blocked.demo shows a blockpage, social.demo a Qaznet leaf, down.demo refuses."""
    ctx = ssl.create_default_context(cafile=str(net.ca_file))
    name, address = await _endpoint(net, _target(net, "blocked.demo"))
    blocked = split(await http_get(address, name))[2].decode()
    name, address = await _endpoint(net, _target(net, "social.demo"))
    with pytest.raises(ssl.SSLCertVerificationError) as mitm:
        await tls_connect(address, name, ctx)
    name, address = await _endpoint(net, _target(net, "down.demo"))
    with pytest.raises(ConnectionRefusedError) as down:
        await tls_connect(address, name, ctx)
    assert "Страница заблокирована" in blocked
    assert classify(mitm.value) == "ssl_unknown_authority"
    assert classify(down.value) == "connection_refused"


async def test_cut_refuses_abroad_and_restore_serves_again(net: DemoNetwork) -> None:
    """A cut stops every international listener (connections refused) and leaves the
    domestic ones (the resolvers, gov.demo, the ISP's blockpage proxy); the restore serves
    on the same ports again."""
    ctx = ssl.create_default_context(cafile=str(net.ca_file))
    news_name, news = await _endpoint(net, _target(net, "news.demo"))
    vpn_name, vpn = await _endpoint(net, _target(net, "vpn.demo"))
    _, (gov_ip,) = await _resolve("gov.demo", net.isp_resolver)
    await net.cut_international()
    assert net.international_cut
    for name, address in ((news_name, news), (vpn_name, vpn)):
        with pytest.raises(ConnectionRefusedError):
            await tls_connect(address, name, ctx)
    with pytest.raises(ConnectionRefusedError):
        await http_get(parse_hostport(net.addresses()["web"]["http"]), "plain.demo")
    domestic = split(await https_get((gov_ip, net.https_port), "gov.demo", ctx))[0]
    name, address = await _endpoint(net, _target(net, "blocked.demo"))
    assert "Страница заблокирована" in split(await http_get(address, name))[2].decode()
    await net.restore_international()
    assert not net.international_cut
    back = split(await https_get(news, news_name, ctx))[0]
    with pytest.raises(ConnectionResetError):  # the SNI filter is back in front of vpn.demo
        await tls_connect(vpn, vpn_name, ctx)
    assert (domestic, back) == (200, 200)


async def test_block_by_dns_changes_the_isp_resolver_only(net: DemoNetwork) -> None:
    """The ISP resolver answers NXDOMAIN from then on; the honest one still has the site."""
    before = await _resolve("news.demo", net.isp_resolver)
    net.block_by_dns("news.demo")
    isp = await _resolve("news.demo", net.isp_resolver)
    honest = await _resolve("news.demo", net.honest_resolver)
    assert before[0] == RCODE.NOERROR and before[1] == honest[1]
    assert isp == (RCODE.NXDOMAIN, [])


async def test_http3_sites(net: DemoNetwork) -> None:
    """h3.demo answers over HTTP/3 where its HTTPS page's Alt-Svc says; the ISP drops
    h3blocked.demo's QUIC from the probe (the control's 127.0.0.50 passes)."""
    from kzprobe.measure.context import Stopwatch
    from kzprobe.measure.steps import quic

    results = {}
    for site in ("h3.demo", "h3blocked.demo"):
        name, (ip, port) = await _endpoint(net, _target(net, site))
        shake, get = await quic.exchange(
            ip, port, server_name=name, clock=Stopwatch(), timeout=1.0, ca_file=net.ca_file,
            get=quic.Get(url=f"https://{name}:{port}/", timeout=2.0, body_limit=65536))
        results[site] = (shake.failure, get.response.code if get and get.response else None)
    assert results == {"h3.demo": (None, 200), "h3blocked.demo": ("generic_timeout_error", None)}
