"""DNS step against a real dnslib server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from kzprobe.config import parse_resolver
from kzprobe.measure.context import Stopwatch
from kzprobe.measure.steps.dns import DnsChannels, lookup_udp
from tests.servers import DnsServer


async def _lookup(server: DnsServer, name: str, qtype: str = "A", timeout: float = 1.0):
    return await lookup_udp(name, qtype, parse_resolver(server.address), timeout=timeout,
                            tries=1, clock=Stopwatch())


async def test_answer_is_recorded_in_ooni_shape(dns_server: DnsServer) -> None:
    """An A answer becomes an OONI df-002 query with the resolver's ip:port."""
    dns_server.zone["site.test"] = ["127.0.0.7"]
    lookup = await _lookup(dns_server, "site.test")
    assert lookup.failure is None
    assert lookup.addresses == ["127.0.0.7"]
    record = lookup.archival()
    assert record["engine"] == "udp"
    assert record["resolver_address"] == dns_server.address
    assert record["answers"][0]["ipv4"] == "127.0.0.7"
    assert record["t"] >= record["t0"]


@pytest.mark.parametrize(
    ("fault", "failure"),
    [("nxdomain", "dns_nxdomain_error"), ("servfail", "dns_servfail_error"),
     ("refused", "dns_refused_error"), ("no_answer", "dns_no_answer")],
)
async def test_rcodes_map_to_ooni_failures(dns_server: DnsServer, fault: str, failure: str) -> None:
    """Each DNS failure rcode from a real server maps to OONI's failure string."""
    dns_server.zone["bad.test"] = ["127.0.0.8"]
    dns_server.faults["bad.test"] = fault
    lookup = await _lookup(dns_server, "bad.test")
    assert lookup.failure == failure
    assert lookup.addresses == []


async def test_silent_resolver_is_a_timeout(dns_server: DnsServer) -> None:
    """A resolver that never answers yields generic_timeout_error within the deadline."""
    dns_server.faults["quiet.test"] = "silent"
    lookup = await _lookup(dns_server, "quiet.test", timeout=0.5)
    assert lookup.failure == "generic_timeout_error"
    assert lookup.t - lookup.t0 < 3.0


async def test_aaaa_without_records_is_no_answer(dns_server: DnsServer) -> None:
    """An AAAA query for a v4-only name is dns_no_answer, not an error."""
    dns_server.zone["v4.test"] = ["127.0.0.9"]
    lookup = await _lookup(dns_server, "v4.test", "AAAA")
    assert lookup.failure == "dns_no_answer"


async def test_changed_answer_is_seen_immediately(dns_server: DnsServer) -> None:
    """No answer cache: c-ares would serve a stale answer for up to an hour otherwise."""
    dns_server.zone["flip.test"] = ["127.0.0.10"]
    first = await _lookup(dns_server, "flip.test")
    dns_server.zone["flip.test"] = ["127.0.0.11"]
    second = await _lookup(dns_server, "flip.test")
    assert first.addresses == ["127.0.0.10"]
    assert second.addresses == ["127.0.0.11"]
    assert len(dns_server.queries) == 2


async def _pooled(server: DnsServer, channels: DnsChannels, name: str, qtype: str = "A"):
    return await lookup_udp(name, qtype, parse_resolver(server.address), timeout=1.0,
                            tries=1, clock=Stopwatch(), channels=channels)


async def test_shared_channels_never_answer_from_cache(dns_server: DnsServer) -> None:
    """A pooled channel asked the same question again hands over to a fresh one: it is asked."""
    channels = DnsChannels()
    dns_server.zone["flip.test"] = ["127.0.0.10"]
    first = await _pooled(dns_server, channels, "flip.test")
    dns_server.zone["flip.test"] = ["127.0.0.11"]
    second = await _pooled(dns_server, channels, "FLIP.test")  # c-ares may key by case
    third = await _pooled(dns_server, channels, "flip.test")
    await channels.aclose()
    assert [first.addresses, second.addresses, third.addresses] == [
        ["127.0.0.10"], ["127.0.0.11"], ["127.0.0.11"]]
    assert len(dns_server.queries) == 3 and channels.created == 3


async def test_distinct_questions_share_one_channel(dns_server: DnsServer) -> None:
    """Many different names (and A/AAAA of one name) concurrently: one channel, all asked."""
    channels = DnsChannels(queries_per_channel=200)
    names = [f"n{i}.test" for i in range(60)]
    for i, name in enumerate(names):
        dns_server.zone[name] = [f"127.0.1.{i}"]
    lookups = await asyncio.gather(*(_pooled(dns_server, channels, name, qtype)
                                     for name in names for qtype in ("A", "AAAA")))
    await channels.aclose()
    a_answers = [lookup.addresses for lookup in lookups[::2]]
    assert a_answers == [[f"127.0.1.{i}"] for i in range(60)]
    assert channels.created == 1 and len(dns_server.queries) == 120


async def test_channel_rotates_after_its_question_budget(dns_server: DnsServer) -> None:
    """The asked-questions set is bounded: a channel retires after its budget of lookups."""
    channels = DnsChannels(queries_per_channel=5)
    for i in range(12):
        dns_server.zone[f"b{i}.test"] = ["127.0.0.5"]
        assert (await _pooled(dns_server, channels, f"b{i}.test")).failure is None
    await channels.aclose()
    assert channels.created == 3
