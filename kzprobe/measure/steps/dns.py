"""DNS step: A/AAAA lookups against one resolver, recorded as OONI df-002 ``queries``.

c-ares caches answers (up to an hour) and pycares offers no switch to turn that off, so
a long-lived channel would hand a monitor stale answers instead of asking. A fresh
channel per lookup never answers from cache but costs ~0.5 ms of CPU (channel set-up,
and a pycares thread that destroys it and contends for the GIL): a third of an HTTPS
measurement. :class:`DnsChannels` keeps both properties: a channel is shared until it
would be asked a question it has already asked, or has taken 64 (then a fresh one takes
over), so every lookup reaches the resolver and a channel's cost is shared by up to 64.
The ``system`` resolver goes through getaddrinfo, as OONI's does.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from dataclasses import dataclass, field
from typing import Any

import aiodns
import pycares

from kzprobe import failures
from kzprobe.config import Resolver
from kzprobe.errors import classify
from kzprobe.measure.clock import Stopwatch

MAX_ANSWERS = 64  # bound on stored records per query (hostile resolvers)
MAX_CNAMES = 16  # of those, CNAMEs: a 100-hop chain must not crowd out the addresses
_QTYPE_CODES = {1: "A", 28: "AAAA", 5: "CNAME"}


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswer:
    answer_type: str  # A, AAAA, CNAME
    value: str
    ttl: int | None = None

    def archival(self) -> dict[str, Any]:
        key = {"A": "ipv4", "AAAA": "ipv6"}.get(self.answer_type, "hostname")
        return {
            "answer_type": self.answer_type,
            key: self.value,
            "ttl": self.ttl,
            "asn": 0,
            "as_org_name": "",
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsLookup:
    hostname: str
    query_type: str
    engine: str
    resolver_address: str
    failure: str | None
    answers: tuple[DnsAnswer, ...] = ()
    t0: float = 0.0
    t: float = 0.0
    tags: tuple[str, ...] = field(default=())

    @property
    def addresses(self) -> list[str]:
        return [a.value for a in self.answers if a.answer_type in ("A", "AAAA")]

    def archival(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "query_type": self.query_type,
            "engine": self.engine,
            "resolver_address": self.resolver_address,
            "resolver_hostname": None,
            "resolver_port": None,
            "failure": self.failure,
            "answers": [a.archival() for a in self.answers],
            "t0": self.t0,
            "t": self.t,
            "tags": list(self.tags),
        }


def _parse_record(record: Any) -> DnsAnswer | None:
    kind = _QTYPE_CODES.get(getattr(record, "type", 0))
    data = getattr(record, "data", None)
    if kind in ("A", "AAAA"):
        value = getattr(data, "addr", None)
    elif kind == "CNAME":
        value = getattr(data, "cname", None)
    else:
        return None
    if not (isinstance(value, str) and value):
        return None
    return DnsAnswer(answer_type=kind, value=value, ttl=getattr(record, "ttl", None))


def _parse_records(records: Any) -> tuple[DnsAnswer, ...]:
    """At most MAX_CNAMES CNAMEs, then addresses up to MAX_ANSWERS records in all.

    c-ares has already parsed the message (at most 64 KiB over TCP, a few thousand
    records), so scanning all of it is bounded.
    """
    return bound_answers([answer for answer in map(_parse_record, records) if answer is not None])


def bound_answers(parsed: list[DnsAnswer]) -> tuple[DnsAnswer, ...]:
    """At most MAX_CNAMES CNAMEs, then addresses up to MAX_ANSWERS records in all."""
    cnames = [a for a in parsed if a.answer_type == "CNAME"][:MAX_CNAMES]
    addresses = [a for a in parsed if a.answer_type != "CNAME"]
    return tuple(cnames + addresses[: MAX_ANSWERS - len(cnames)])


class _OneQueryResolver(aiodns.DNSResolver):
    """A c-ares channel driven by the event loop, without c-ares's own event thread.

    aiodns 4 (pycares 5) gives every channel an OS thread, an epoll fd and an inotify
    watch on resolv.conf; with a fresh channel per lookup that was ~40% of a lookup's
    CPU and, at 100 lookups in flight, over a thousand threads waiting to be reaped.
    The socket-state-callback mode aiodns falls back to needs none of them.
    """

    def _make_channel(self, **kwargs: Any) -> tuple[bool, Any]:
        resolver = weakref.ref(self)

        def sock_state(fd: int, readable: bool, writable: bool) -> None:
            this = resolver()
            if this is not None:
                this._sock_state_cb(fd, readable, writable)

        return False, pycares.Channel(sock_state_cb=sock_state, timeout=self._timeout, **kwargs)


QUERIES_PER_CHANNEL = 64  # then a fresh channel: bounds its questions set and its socket's backlog
_Question = tuple[str, str]  # (lower-cased name, query type)
_ChannelKey = tuple[str, float, int]  # (resolver, timeout, tries): fixed per channel


@dataclass(slots=True, eq=False)
class _Channel:
    resolver: _OneQueryResolver
    asked: set[_Question] = field(default_factory=set)
    in_flight: int = 0
    retired: bool = False


class DnsChannels:
    """c-ares channels that never answer from their cache: none is asked a question twice.

    One current channel per (resolver, timeout, tries). A lookup whose question the
    current channel has already asked (the same name measured again, a retry) retires
    it; a retired channel is closed once its last lookup ends. Names compare
    case-insensitively, which rotates at least as often as c-ares's cache key needs.
    """

    def __init__(self, queries_per_channel: int = QUERIES_PER_CHANNEL) -> None:
        self._limit = queries_per_channel
        self._current: dict[_ChannelKey, _Channel] = {}
        self.created = 0  # channels made so far (a figure for tests and benchmarks)

    async def acquire(self, resolver: Resolver, timeout: float, tries: int, host: str,
                      query_type: str) -> _Channel:
        key, question = (str(resolver), timeout, tries), (host.lower(), query_type)
        channel = self._current.get(key)
        if channel is None or question in channel.asked or len(channel.asked) >= self._limit:
            if channel is not None:
                await self._retire(channel)
            channel = self._current[key] = _Channel(_OneQueryResolver(
                nameservers=[str(resolver)], timeout=timeout, tries=tries))
            self.created += 1
        channel.asked.add(question)
        channel.in_flight += 1
        return channel

    async def release(self, channel: _Channel) -> None:
        channel.in_flight -= 1
        if channel.retired and channel.in_flight == 0:
            await channel.resolver.close()

    async def _retire(self, channel: _Channel) -> None:
        channel.retired = True
        if channel.in_flight == 0:
            await channel.resolver.close()

    async def aclose(self) -> None:
        """Retire every channel (lookups still running finish, then theirs closes)."""
        for channel in self._current.values():
            await self._retire(channel)
        self._current.clear()


async def lookup_udp(
    host: str,
    query_type: str,
    resolver: Resolver,
    *,
    timeout: float,
    tries: int,
    clock: Stopwatch,
    tags: tuple[str, ...] = (),
    channels: DnsChannels | None = None,
) -> DnsLookup:
    """Query one resolver over UDP (c-ares falls back to TCP on truncation).

    Without ``channels``, a channel of its own, made and closed for this lookup.
    """
    t0 = clock.now()
    pool = channels if channels is not None else DnsChannels()
    lease = await pool.acquire(resolver, timeout, tries, host, query_type)
    channel = lease.resolver
    failure: str | None = None
    answers: tuple[DnsAnswer, ...] = ()
    try:
        async with asyncio.timeout(timeout * tries + 1.0):
            result = await channel.query_dns(host, query_type)
        answers = _parse_records(result.answer)
        if not any(a.answer_type == query_type for a in answers):
            failure = failures.DNS_NO_ANSWER
    except Exception as exc:
        failure = classify(exc)
    finally:
        await pool.release(lease)
        if channels is None:
            await pool.aclose()
    return DnsLookup(
        hostname=host,
        query_type=query_type,
        engine="udp",
        resolver_address=str(resolver),
        failure=failure,
        answers=answers,
        t0=t0,
        t=clock.now(),
        tags=tags,
    )


_GAI_FAILURES = {
    socket.EAI_NONAME: failures.DNS_NXDOMAIN_ERROR,
    socket.EAI_AGAIN: failures.DNS_TEMPORARY_FAILURE,
    socket.EAI_FAIL: failures.DNS_NON_RECOVERABLE_FAILURE,
    getattr(socket, "EAI_NODATA", -5): failures.DNS_NO_ANSWER,
}


async def lookup_system(
    host: str, *, timeout: float, clock: Stopwatch, tags: tuple[str, ...] = ()
) -> DnsLookup:
    """Resolve through getaddrinfo: the path a user's browser takes."""
    loop = asyncio.get_running_loop()
    t0 = clock.now()
    failure: str | None = None
    answers: list[DnsAnswer] = []
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        for family, *_rest, sockaddr in infos[:MAX_ANSWERS]:
            kind = "AAAA" if family == socket.AF_INET6 else "A"
            answer = DnsAnswer(answer_type=kind, value=str(sockaddr[0]))
            if answer not in answers:
                answers.append(answer)
    except socket.gaierror as exc:
        failure = _GAI_FAILURES.get(exc.errno, failures.DNS_SERVER_MISBEHAVING)
    except Exception as exc:
        failure = classify(exc)
    return DnsLookup(
        hostname=host,
        query_type="ANY",
        engine="getaddrinfo",
        resolver_address="",
        failure=failure,
        answers=tuple(answers),
        t0=t0,
        t=clock.now(),
        tags=tags,
    )
