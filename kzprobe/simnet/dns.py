"""A DNS server (UDP and TCP, dnslib wire format) that answers honestly or lies per name.

One class plays both roles of the simulated internet: the authoritative server (a zone
of addresses and CNAMEs, rule ``answer``) and the ISP resolver (default rule
``forward:<ip:port>`` to the authoritative one, with lies for chosen names).

Behaviours, per name (exact, or ``*.suffix``; case-insensitive; Unicode names are
matched by their punycode A-label, which is what is on the wire):

``answer``          honest answer from the zone (NXDOMAIN if the name is not in it)
``nxdomain`` ``servfail`` ``refused``   that rcode, no answer
``no_answer``       NOERROR with an empty answer section
``bogus:<ip>``      a forged A (or AAAA, for a v6 address), e.g. a 127.0.0.x bogon
``redirect:<ip>``   same on the wire as bogus; meant to point at a blockpage server
``silent``          never reply (the client times out)
``truncate``        over UDP: empty answer with TC set; over TCP: the honest answer
``forward:<ip:port>`` relay the query to another server, return its reply as is

Rules files are JSON: ``{"default": "answer", "rules": {name: behaviour},
"zone": {name: [ip, ...]}, "cnames": {alias: target}}`` (every key optional).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

from kzprobe.simnet.common import (
    HostPort,
    NameRules,
    OneAddress,
    Service,
    TaskTracker,
    bind_tcp,
    bind_udp,
    close_server,
    format_hostport,
    normalize_name,
    parse_hostport,
    parse_rule_map,
    sock_address,
)

BehaviourKind = Literal["answer", "nxdomain", "servfail", "refused", "no_answer", "bogus",
                        "redirect", "silent", "truncate", "forward"]
Transport = Literal["udp", "tcp"]
_SIMPLE: tuple[BehaviourKind, ...] = ("answer", "nxdomain", "servfail", "refused",
                                      "no_answer", "silent", "truncate")
_RCODES = {"nxdomain": RCODE.NXDOMAIN, "servfail": RCODE.SERVFAIL, "refused": RCODE.REFUSED}
_MAX_CNAME_CHAIN = 8
_MAX_TCP_MESSAGE = 65535


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One parsed per-name behaviour (see the module docstring)."""

    kind: BehaviourKind
    address: str | None = None
    upstream: HostPort | None = None

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        kind, _, arg = spec.strip().partition(":")
        if kind in _SIMPLE and not arg:
            return cls(kind)
        if kind in ("bogus", "redirect") and arg:
            return cls(kind, address=str(ipaddress.ip_address(arg)))  # type: ignore[arg-type]
        if kind == "forward" and arg:
            return cls("forward", upstream=parse_hostport(arg, 53))
        raise ValueError(f"unknown DNS behaviour {spec!r}")


@dataclass(frozen=True, slots=True)
class Zone:
    """Names to addresses and CNAMEs; build with :meth:`build` so names are normalized."""

    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cnames: Mapping[str, str] = field(default_factory=dict)
    ttl: int = 60

    @classmethod
    def build(cls, addresses: Mapping[str, Any] | None = None,
              cnames: Mapping[str, str] | None = None, ttl: int = 60) -> Zone:
        """Validate IPs and normalize names (Unicode to A-labels); raise ValueError."""
        addrs = {normalize_name(n): tuple(str(ipaddress.ip_address(ip)) for ip in ips)
                 for n, ips in (addresses or {}).items()}
        aliases = {normalize_name(a): normalize_name(t) for a, t in (cnames or {}).items()}
        return cls(addrs, aliases, ttl)

    def resolve(self, name: str) -> tuple[list[tuple[str, str]], tuple[str, ...] | None]:
        """Follow CNAMEs from ``name``: ([(alias, target)...], addresses or None if unknown)."""
        chain: list[tuple[str, str]] = []
        while name in self.cnames and len(chain) < _MAX_CNAME_CHAIN:
            chain.append((name, self.cnames[name]))
            name = self.cnames[name]
        return chain, self.addresses.get(name)


@dataclass(frozen=True, slots=True)
class Query:
    """One query as the server saw it (kept in a bounded log for tests)."""

    name: str
    qtype: str
    transport: Transport
    behaviour: str


class DnsServer(OneAddress, Service):
    """UDP + TCP DNS server on one address; see the module docstring."""

    def __init__(self, listen: HostPort, *, zone: Zone | None = None,
                 rules: NameRules[Behaviour] | None = None, authoritative: bool = True,
                 tcp: bool = True, forward_timeout: float = 2.0, idle_timeout: float = 10.0,
                 max_inflight: int = 256) -> None:
        self.listen = listen
        self.zone = zone or Zone()
        self.rules = rules or NameRules(Behaviour("answer"))
        self.authoritative, self.tcp = authoritative, tcp
        self.forward_timeout, self.idle_timeout = forward_timeout, idle_timeout
        self.log: collections.deque[Query] = collections.deque(maxlen=1024)
        self._tracker = TaskTracker(max_inflight)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._address: HostPort | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp, tcp = self._bind()
        self._address = sock_address(udp)
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        self._udp = transport
        if tcp is not None:
            self._tcp_server = await asyncio.start_server(self._handle_tcp, sock=tcp)

    def _bind(self) -> tuple[socket.socket, socket.socket | None]:
        """UDP and TCP on the same port; with port 0, retry until both are free."""
        for _ in range(20):
            udp = bind_udp(*self.listen)
            if not self.tcp:
                return udp, None
            try:
                return udp, bind_tcp(self.listen[0], sock_address(udp)[1])
            except OSError:
                udp.close()
                if self.listen[1] != 0:
                    raise
        raise OSError("no free port for UDP and TCP together")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await close_server(self._tcp_server, self._tracker)
        await self._tracker.cancel_all()
        self._tcp_server = None

    def addresses(self) -> dict[str, str]:
        found = {"udp": format_hostport(self.address)}
        if self._tcp_server is not None:
            found["tcp"] = found["udp"]
        return found

    # ----------------------------------------------------------------- rules

    def set_rule(self, name: str, spec: str) -> None:
        """Change one name's behaviour now; the next query sees it."""
        self.rules.set(name, Behaviour.parse(spec))

    def set_rules(self, rules: NameRules[Behaviour]) -> None:
        self.rules = rules

    def set_zone(self, zone: Zone) -> None:
        self.zone = zone

    def load_rules(self, data: object) -> None:
        """Replace rules (and zone, if given) from a parsed JSON file; ValueError keeps both."""
        rules = parse_rule_map(data, Behaviour.parse, "answer")
        assert isinstance(data, dict)  # parse_rule_map checked it
        zone = self.zone
        if "zone" in data or "cnames" in data:
            zone = Zone.build(data.get("zone"), data.get("cnames"))
        self.rules, self.zone = rules, zone

    # ----------------------------------------------------------------- answering

    def _lookup(self, data: bytes, transport: Transport) -> tuple[Any, Behaviour] | None:
        """Parse a query and pick its behaviour; None for anything that is not a query."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises assorted errors on garbage
            return None
        if request.header.qr or not request.questions:
            return None
        name = normalize_name(str(request.q.qname))
        behaviour = self.rules.lookup(name)
        self.log.append(Query(name, QTYPE.get(request.q.qtype, str(request.q.qtype)),
                              transport, behaviour.kind))
        return request, behaviour

    def answer(self, request: Any, behaviour: Behaviour, transport: Transport) -> bytes | None:
        """The reply for every behaviour except ``forward`` (None: stay silent)."""
        if behaviour.kind == "silent":
            return None
        reply = request.reply(aa=int(self.authoritative), ra=1)
        if behaviour.kind in _RCODES:
            reply.header.rcode = _RCODES[behaviour.kind]
        elif behaviour.kind in ("bogus", "redirect"):
            self._add_forged(reply, request, behaviour.address or "")
        elif behaviour.kind == "truncate" and transport == "udp":
            reply.header.tc = 1
        elif behaviour.kind in ("answer", "truncate"):
            self._add_honest(reply, request)
        return bytes(reply.pack())

    def _add_forged(self, reply: Any, request: Any, address: str) -> None:
        qtype, v6 = request.q.qtype, ":" in address
        if qtype in (QTYPE.A, QTYPE.ANY) and not v6:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=self.zone.ttl))
        elif qtype in (QTYPE.AAAA, QTYPE.ANY) and v6:
            reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address),
                                ttl=self.zone.ttl))

    def _add_honest(self, reply: Any, request: Any) -> None:
        chain, addresses = self.zone.resolve(normalize_name(str(request.q.qname)))
        owner, ttl = request.q.qname, self.zone.ttl
        for _alias, target in chain:
            reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=ttl))
            owner = target
        if addresses is None:
            if not chain:
                reply.header.rcode = RCODE.NXDOMAIN
            return
        qtype = request.q.qtype
        for ip in addresses:
            if ":" not in ip and qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(owner, QTYPE.A, rdata=A(ip), ttl=ttl))
            elif ":" in ip and qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(owner, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl))

    async def respond(self, data: bytes, transport: Transport) -> bytes | None:
        """The wire reply to one query, or None to say nothing."""
        found = self._lookup(data, transport)
        if found is None:
            return None
        request, behaviour = found
        if behaviour.kind != "forward" or behaviour.upstream is None:
            return self.answer(request, behaviour, transport)
        reply = await self._forward(data, behaviour.upstream, transport)
        if reply is None:
            servfail = request.reply(aa=0, ra=1)
            servfail.header.rcode = RCODE.SERVFAIL
            return bytes(servfail.pack())
        return reply

    async def _forward(self, data: bytes, upstream: HostPort, transport: Transport) -> bytes | None:
        try:
            async with asyncio.timeout(self.forward_timeout):
                if transport == "tcp":
                    return await _query_tcp(data, upstream)
                return await _query_udp(data, upstream)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return None

    # ----------------------------------------------------------------- transports

    def _datagram(self, data: bytes, addr: Any) -> None:
        if self._tracker.full:
            return  # overloaded: drop, as a busy resolver would
        self._tracker.spawn(self._reply_udp(data, addr))

    async def _reply_udp(self, data: bytes, addr: Any) -> None:
        reply = await self.respond(data, "udp")
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tracker.add_current()
        await serve_stream(reader, writer, self.respond, self.idle_timeout)


async def serve_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       respond: Callable[[bytes, Transport], Awaitable[bytes | None]],
                       idle_timeout: float) -> None:
    """Answer length-prefixed queries (RFC 1035 4.2.2; DoT too) until the peer goes quiet
    for ``idle_timeout``; then close. The top frame of a handler task: it never raises."""
    try:
        while True:
            async with asyncio.timeout(idle_timeout):
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
            reply = await respond(data, "tcp")
            if reply is not None and len(reply) <= _MAX_TCP_MESSAGE:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), idle_timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass  # top frame of the handler task: see SniFilter._handle
    finally:
        writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._datagram(data, addr)


class _OneReply(asyncio.DatagramProtocol):
    """Client side of one forwarded UDP query: the first datagram back wins."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _query_udp(data: bytes, upstream: HostPort) -> bytes:
    """Send one query over UDP and return the first reply (the caller bounds the time)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_OneReply, remote_addr=upstream)
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _query_tcp(data: bytes, upstream: HostPort) -> bytes:
    """Send one query over TCP and return the reply (the caller bounds the time)."""
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def query(name: str, qtype: str, server: HostPort, *, transport: Transport = "udp",
                timeout: float = 2.0) -> DNSRecord:
    """Ask ``server`` one question and parse the reply (a small client for tests and the lab)."""
    request = DNSRecord.question(normalize_name(name), qtype)
    async with asyncio.timeout(timeout):
        data = bytes(request.pack())
        raw = await (_query_tcp(data, server) if transport == "tcp" else _query_udp(data, server))
    return DNSRecord.parse(raw)
