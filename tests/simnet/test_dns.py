"""The simulated DNS server against real clients (dnslib over UDP/TCP, and aiodns)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiodns
import pytest
from dnslib import QTYPE, RCODE

from kzprobe.errors import classify
from kzprobe.simnet.common import NameRules, format_hostport
from kzprobe.simnet.dns import Behaviour, DnsServer, Zone, query

ZONE = Zone.build({"news.demo": ["127.0.0.20", "::1"], "жаңалықтар.demo": ["127.0.0.21"],
                   "site.demo": ["127.0.0.22"]},
                  {"www.news.demo": "cdn.news.demo", "cdn.news.demo": "news.demo"})


def _answers(reply: object, rtype: str = "A") -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if QTYPE[rr.rtype] == rtype]  # type: ignore[attr-defined]


@pytest.fixture
async def auth() -> AsyncIterator[DnsServer]:
    async with DnsServer(("127.0.0.1", 0), zone=ZONE) as server:
        yield server


async def test_honest_answers(auth: DnsServer) -> None:
    """`answer` returns the zone's A and AAAA records with NOERROR."""
    a = await query("news.demo", "A", auth.address)
    aaaa = await query("news.demo", "AAAA", auth.address)
    assert (a.header.rcode, _answers(a)) == (RCODE.NOERROR, ["127.0.0.20"])
    assert _answers(aaaa, "AAAA") == ["::1"]


async def test_cname_chain_and_case(auth: DnsServer) -> None:
    """CNAMEs are followed within the zone; names match case-insensitively."""
    reply = await query("WWW.News.Demo", "A", auth.address)
    assert _answers(reply, "CNAME") == ["cdn.news.demo.", "news.demo."]
    assert _answers(reply) == ["127.0.0.20"]


async def test_idna_name(auth: DnsServer) -> None:
    """A zone name written in Unicode answers its punycode A-label."""
    reply = await query("xn--80aaav1a5am5es3bmc.demo", "A", auth.address)
    assert _answers(reply) == ["127.0.0.21"]


async def test_unknown_name_is_nxdomain(auth: DnsServer) -> None:
    """A name outside the zone gets NXDOMAIN."""
    assert (await query("nope.demo", "A", auth.address)).header.rcode == RCODE.NXDOMAIN


@pytest.mark.parametrize(("spec", "rcode", "answers"), [
    ("nxdomain", RCODE.NXDOMAIN, []),
    ("servfail", RCODE.SERVFAIL, []),
    ("refused", RCODE.REFUSED, []),
    ("no_answer", RCODE.NOERROR, []),
    ("bogus:127.0.0.100", RCODE.NOERROR, ["127.0.0.100"]),
    ("redirect:127.0.0.24", RCODE.NOERROR, ["127.0.0.24"]),
])
async def test_fault_behaviours(auth: DnsServer, spec: str, rcode: int,
                                answers: list[str]) -> None:
    """Each lying behaviour produces its rcode and (forged) answers."""
    auth.set_rule("site.demo", spec)
    reply = await query("site.demo", "A", auth.address)
    assert (reply.header.rcode, _answers(reply)) == (rcode, answers)


async def test_silent_never_replies(auth: DnsServer) -> None:
    """`silent` sends nothing, so the client times out."""
    auth.set_rule("site.demo", "silent")
    with pytest.raises(TimeoutError):
        await query("site.demo", "A", auth.address, timeout=0.3)


async def test_truncate_udp_then_tcp(auth: DnsServer) -> None:
    """`truncate` sets TC over UDP with no answer, and answers fully over TCP."""
    auth.set_rule("site.demo", "truncate")
    udp = await query("site.demo", "A", auth.address)
    tcp = await query("site.demo", "A", auth.address, transport="tcp")
    assert (udp.header.tc, _answers(udp)) == (1, [])
    assert (tcp.header.tc, _answers(tcp)) == (0, ["127.0.0.22"])


async def test_rule_change_between_queries(auth: DnsServer) -> None:
    """A rule changed at run time is seen by the very next query."""
    before = await query("site.demo", "A", auth.address)
    auth.set_rule("site.demo", "bogus:127.0.0.99")
    after = await query("site.demo", "A", auth.address)
    assert (_answers(before), _answers(after)) == (["127.0.0.22"], ["127.0.0.99"])


async def test_wildcard_rule(auth: DnsServer) -> None:
    """`*.suffix` rules match subdomains; exact rules win over them."""
    auth.set_rules(NameRules(Behaviour("answer"), {"*.news.demo": Behaviour("refused"),
                                                  "cdn.news.demo": Behaviour("servfail")}))
    www = await query("www.news.demo", "A", auth.address)
    cdn = await query("cdn.news.demo", "A", auth.address)
    apex = await query("news.demo", "A", auth.address)
    assert [r.header.rcode for r in (www, cdn, apex)] == [RCODE.REFUSED, RCODE.SERVFAIL,
                                                         RCODE.NOERROR]


async def test_load_rules_replaces_zone_and_keeps_old_on_error(auth: DnsServer) -> None:
    """A rules file can swap the zone; an invalid one raises and changes nothing."""
    auth.load_rules({"rules": {"a.demo": "nxdomain"}, "zone": {"b.demo": ["127.0.0.7"]}})
    with pytest.raises(ValueError, match=r"x\.demo"):
        auth.load_rules({"rules": {"x.demo": "lie-creatively"}})
    b = await query("b.demo", "A", auth.address)
    a = await query("a.demo", "A", auth.address)
    assert (_answers(b), a.header.rcode) == (["127.0.0.7"], RCODE.NXDOMAIN)


async def test_isp_resolver_forwards_and_lies(auth: DnsServer) -> None:
    """A resolver forwarding to the authoritative server is honest except where it lies."""
    rules = NameRules(Behaviour.parse(f"forward:{format_hostport(auth.address)}"),
                      {"site.demo": Behaviour("nxdomain")})
    async with DnsServer(("127.0.0.1", 0), rules=rules, authoritative=False) as isp:
        honest = await query("www.news.demo", "A", isp.address)
        over_tcp = await query("news.demo", "A", isp.address, transport="tcp")
        lie = await query("site.demo", "A", isp.address)
    assert _answers(honest) == _answers(over_tcp) == ["127.0.0.20"]
    assert lie.header.rcode == RCODE.NXDOMAIN
    assert [q.transport for q in auth.log if q.name == "news.demo"] == ["tcp"]


async def test_forward_to_dead_upstream_is_servfail() -> None:
    """When the upstream never answers, the forwarder says SERVFAIL within its deadline."""
    async with DnsServer(("127.0.0.1", 0), rules=NameRules(Behaviour("silent"))) as dead, \
            DnsServer(("127.0.0.1", 0), forward_timeout=0.2, rules=NameRules(
                Behaviour.parse(f"forward:{format_hostport(dead.address)}"))) as isp:
        reply = await query("x.demo", "A", isp.address)
    assert reply.header.rcode == RCODE.SERVFAIL


async def test_garbage_is_ignored(auth: DnsServer) -> None:
    """Non-DNS datagrams get no reply and do not stop the server."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=auth.address)
    transport.sendto(b"\x00garbage")
    transport.close()
    assert _answers(await query("news.demo", "A", auth.address)) == ["127.0.0.20"]


async def test_aiodns_client_with_port(auth: DnsServer) -> None:
    """aiodns 4 accepts "ip:port" nameservers; answers and faults map to OONI failures."""
    auth.set_rule("site.demo", "nxdomain")
    resolver = aiodns.DNSResolver(nameservers=[format_hostport(auth.address)], timeout=1.0,
                                  tries=1)
    try:
        result = await resolver.query_dns("news.demo", "A")
        with pytest.raises(aiodns.error.DNSError) as nx:
            await resolver.query_dns("site.demo", "A")
        auth.set_rule("site.demo", "servfail")
        with pytest.raises(aiodns.error.DNSError) as sf:
            await resolver.query_dns("site.demo", "A")
    finally:
        await resolver.close()
    assert [r.data.addr for r in result.answer] == ["127.0.0.20"]
    assert (classify(nx.value), classify(sf.value)) == ("dns_nxdomain_error",
                                                        "dns_servfail_error")
