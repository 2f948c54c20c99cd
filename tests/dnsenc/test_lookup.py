"""Encrypted resolvers as lookups: DoT and DoH against unbound, and the bounds against
hostile servers (no answer, a cut length prefix, an endless body)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from kzprobe import failures
from kzprobe.config import parse_resolver
from kzprobe.measure.clock import Stopwatch
from kzprobe.measure.steps import dnsenc
from kzprobe.measure.steps.dns import DnsLookup
from tests.dnsenc import servers


async def lookup(spec: str, ca_file: Path, host: str = "site.test", qtype: str = "A",
                 timeout: float = 3.0) -> DnsLookup:
    return await dnsenc.lookup_encrypted(host, qtype, parse_resolver(spec), timeout=timeout,
                                         clock=Stopwatch(), ca_file=ca_file)


async def test_dot_answers(unbound: servers.Unbound, ca_file: Path) -> None:
    found = await lookup(f"tls://127.0.0.1:{unbound.dot_port}?sni={servers.NAME}", ca_file)
    assert found.failure is None, found
    assert found.addresses == ["192.0.2.10"]
    assert (found.engine, found.resolver_address) == ("dot", f"127.0.0.1:{unbound.dot_port}")


async def test_doh_answers_over_http2(unbound: servers.Unbound, ca_file: Path) -> None:
    url = f"https://{servers.NAME}:{unbound.doh_port}/dns-query"
    found = await lookup(f"{url}?bootstrap=127.0.0.1", ca_file, host="other.test")
    assert found.failure is None, found
    assert found.addresses == ["192.0.2.11"]
    assert (found.engine, found.resolver_address) == ("doh", url)
    assert found.archival()["answers"][0]["ipv4"] == "192.0.2.11"


async def test_rcodes_and_no_answer(unbound: servers.Unbound, ca_file: Path) -> None:
    dot = f"tls://127.0.0.1:{unbound.dot_port}?sni={servers.NAME}"
    nx = await lookup(dot, ca_file, host="missing.test")
    refused = await lookup(dot, ca_file, host="example.org")  # "." refuse: never recursed
    nodata = await lookup(dot, ca_file, qtype="AAAA")
    assert nx.failure == failures.DNS_NXDOMAIN_ERROR
    assert refused.failure == failures.DNS_REFUSED_ERROR
    assert nodata.failure == failures.DNS_NO_ANSWER


async def test_untrusted_certificate(unbound: servers.Unbound, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    found = await lookup(f"tls://127.0.0.1:{unbound.dot_port}?sni={servers.NAME}", other)
    assert found.failure == failures.SSL_UNKNOWN_AUTHORITY


async def test_wrong_name(unbound: servers.Unbound, ca_file: Path) -> None:
    found = await lookup(f"tls://127.0.0.1:{unbound.dot_port}?sni=wrong.test", ca_file)
    assert found.failure == failures.SSL_INVALID_HOSTNAME


async def test_refused_port(ca_file: Path) -> None:
    found = await lookup(f"tls://127.0.0.1:{servers.free_port()}", ca_file)
    assert found.failure == failures.CONNECTION_REFUSED


@pytest.mark.parametrize(("handler", "failure"), [
    (servers.never_answers, failures.GENERIC_TIMEOUT_ERROR),
    (servers.cut_prefix, failures.EOF_ERROR),
])
async def test_hostile_dot(ca: trustme.CA, ca_file: Path, handler: servers.Handler,
                           failure: str) -> None:
    server = await servers.start_tls_server(handler, servers.server_context(ca))
    try:
        found = await lookup(f"tls://127.0.0.1:{servers.port_of(server)}?sni={servers.NAME}",
                             ca_file, timeout=1.0)
    finally:
        server.close()
    assert found.failure == failure


async def test_endless_doh_body_is_cut(ca: trustme.CA, ca_file: Path) -> None:
    server = await servers.start_tls_server(servers.endless_doh,
                                            servers.server_context(ca, ("h2",)))
    try:
        spec = f"https://{servers.NAME}:{servers.port_of(server)}/dns-query?bootstrap=127.0.0.1"
        found = await asyncio.wait_for(lookup(spec, ca_file, timeout=10.0), 20)
    finally:
        server.close()
    assert found.failure == failures.DNS_REPLY_TOO_LARGE
