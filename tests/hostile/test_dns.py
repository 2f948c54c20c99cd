"""Hostile DNS: floods of records, CNAME loops, truncation, broken packets (UDP and TCP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dnslib import CNAME, QTYPE, RR, A, DNSRecord

from kzprobe.measure.experiments.web_connectivity import MAX_ENDPOINTS
from kzprobe.measure.steps.dns import MAX_ANSWERS, MAX_CNAMES
from tests.hostile.conftest import DNS_TIMEOUT, MEMORY_BOUND, SLACK, Run, bounded
from tests.servers import DnsHandler, DnsServer, WebSite, addresses


def _many(count: int) -> list[str]:
    """127.0.0.1 (the web site) first, then ``count - 1`` other loopback addresses."""
    return ["127.0.0.1"] + [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count - 1)]


def flood(count: int, *, udp_tc: bool = False) -> DnsHandler:
    """``count`` A records; with ``udp_tc``, UDP gets an empty answer with TC set."""
    def answer(request: DNSRecord, proto: str) -> DNSRecord:
        if udp_tc and proto == "udp":
            reply = request.reply()
            reply.header.tc = 1
            return reply
        return addresses(request, _many(count))
    return answer


def cname_chain(names: list[str], final: str | None = None) -> DnsHandler:
    """CNAMEs from the query name through ``names`` (a loop if it ends where it began)."""
    def answer(request: DNSRecord, proto: str) -> DNSRecord:
        reply = request.reply()
        owner = str(request.q.qname)
        for name in names:
            reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(name), ttl=60))
            owner = name
        if final:
            reply.add_answer(RR(owner, QTYPE.A, rdata=A(final), ttl=60))
        return reply
    return answer


def cut(request: DNSRecord, proto: str) -> bytes:
    """An answer cut three bytes short, TC not set."""
    return bytes(addresses(request, ["127.0.0.1"]).pack())[:-3]


def garbage(request: DNSRecord, proto: str) -> bytes:
    """The query ID, then junk."""
    return request.pack()[:2] + b"\xff" * 40


def wrong_id(request: DNSRecord, proto: str) -> DNSRecord:
    """A good answer to a query that was never asked (an off-path guess)."""
    request.header.id ^= 0xFFFF
    return addresses(request, ["127.0.0.1"])


@pytest.fixture
async def resolver() -> AsyncIterator[Callable[..., Any]]:
    servers: list[DnsServer] = []

    async def start(answer: DnsHandler, *, tcp: bool = True) -> DnsServer:
        server = DnsServer(handlers={"h.test": answer}, zone={"site.test": ["127.0.0.1"]},
                           tcp=tcp)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


async def _measure(probe: Callable[..., Any], dns: DnsServer, website: WebSite, name: str
                   ) -> tuple[Any, Run]:
    engine = probe(dns=dns)
    run = await bounded(engine, f"http://h.test:{website.http_port}/")
    run.report(name)
    return engine, run


@pytest.mark.parametrize(
    ("name", "answer", "wire"),
    [
        ("300 A records in one UDP datagram", flood(300), ["udp"]),
        ("TC over UDP, 300 A records over TCP", flood(300, udp_tc=True), ["udp", "tcp"]),
        ("TC over UDP, 4,000 A records (64 KiB) over TCP", flood(4000, udp_tc=True),
         ["udp", "tcp"]),
    ],
)
async def test_record_floods_are_capped(probe, resolver, website: WebSite, still_works,
                                        name: str, answer: Any, wire: list[str]) -> None:
    """Hundreds or thousands of records: 64 stored, 8 dialled, the site still measured."""
    dns = await resolver(answer)
    engine, run = await _measure(probe, dns, website, name)
    query = run.keys["queries"][0]
    assert query["failure"] is None
    assert len(query["answers"]) == MAX_ANSWERS
    assert len(run.keys["tcp_connect"]) == MAX_ENDPOINTS
    assert run.request["response"]["code"] == 200
    assert [proto for host, _, proto in dns.queries if host == "h.test"] == wire
    assert run.seconds < SLACK
    assert run.peak_bytes < MEMORY_BOUND
    await still_works(engine)


async def test_truncated_answer_without_tcp_is_a_failure(probe, resolver, website: WebSite,
                                                         still_works) -> None:
    """TC set and nothing listening on TCP: the DNS failure is recorded, nothing dialled."""
    dns = await resolver(flood(300, udp_tc=True), tcp=False)
    engine, run = await _measure(probe, dns, website, "TC over UDP, TCP refused")
    assert run.keys["dns_experiment_failure"] == "connection_refused"
    assert run.keys["tcp_connect"] == []
    assert run.seconds < SLACK
    await still_works(engine)


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("CNAME loop a -> b -> a", cname_chain(["b.test", "h.test"])),
        ("CNAME to itself", cname_chain(["h.test"])),
    ],
)
async def test_cname_loops_are_no_answer(probe, resolver, website: WebSite, still_works,
                                         name: str, answer: Any) -> None:
    """A CNAME loop is recorded as it came, dns_no_answer; kzprobe does not chase it."""
    dns = await resolver(answer)
    engine, run = await _measure(probe, dns, website, name)
    query = run.keys["queries"][0]
    assert query["failure"] == "dns_no_answer"
    assert {a["answer_type"] for a in query["answers"]} == {"CNAME"}
    assert run.keys["dns_experiment_failure"] == "dns_no_answer"
    assert len(dns.queries) == 1
    assert run.seconds < SLACK
    await still_works(engine)


async def test_long_cname_chain_keeps_its_address(probe, resolver, website: WebSite,
                                                  still_works) -> None:
    """A 100-hop CNAME chain ending in an A: 16 CNAMEs and the address are kept and dialled."""
    dns = await resolver(cname_chain([f"c{i}.test" for i in range(100)], final="127.0.0.1"))
    engine, run = await _measure(probe, dns, website, "100-hop CNAME chain")
    answers = run.keys["queries"][0]["answers"]
    assert [a["answer_type"] for a in answers] == ["CNAME"] * MAX_CNAMES + ["A"]
    assert answers[-1]["ipv4"] == "127.0.0.1"
    assert run.request["response"]["code"] == 200
    await still_works(engine)


@pytest.mark.parametrize(
    ("name", "answer", "failure", "seconds"),
    [
        ("answer cut short", cut, "dns_server_misbehaving", 0.0),
        ("garbage after the ID", garbage, "dns_server_misbehaving", 0.0),
        ("answer with the wrong ID", wrong_id, "generic_timeout_error", DNS_TIMEOUT),
        ("no answer at all", lambda request, proto: None, "generic_timeout_error", DNS_TIMEOUT),
    ],
)
async def test_broken_answers_are_failures(probe, resolver, website: WebSite, still_works,
                                           name: str, answer: Any, failure: str,
                                           seconds: float) -> None:
    """Broken packets are dns_server_misbehaving; spoof-like and missing ones time out."""
    dns = await resolver(answer)
    engine, run = await _measure(probe, dns, website, name)
    assert run.keys["queries"][0]["failure"] == failure
    assert run.keys["dns_experiment_failure"] == failure
    assert seconds - 0.2 < run.seconds < seconds + SLACK
    await still_works(engine)
