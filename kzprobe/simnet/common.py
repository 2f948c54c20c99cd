"""Shared plumbing for the simulated network: addresses, names, rules, lifecycle.

Every component is a :class:`Service`: ``await start()`` binds and returns quickly,
``addresses()`` reports what was bound (the CLI prints it in its READY line), and
``await stop()`` closes listeners and cancels connection tasks within a deadline, so a
test or the demo never leaks sockets or tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Generic, Self, TypeVar

import idna

T = TypeVar("T")

HostPort = tuple[str, int]
STOP_TIMEOUT = 2.0  # seconds a component may take to stop


def parse_hostport(spec: str, default_port: int | None = None) -> HostPort:
    """Parse ``ip:port`` or ``[v6]:port`` (or a bare IP when ``default_port`` is given)."""
    spec = spec.strip()
    host, port_text = spec, ""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    ipaddress.ip_address(host)
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in {spec!r}")
        return host, default_port
    port = int(port_text)
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range in {spec!r}")
    return host, port


def format_hostport(address: HostPort) -> str:
    """The inverse of :func:`parse_hostport`."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_name(name: str) -> str:
    """Lower-case A-label form of a host name, so rules match what is on the wire.

    Rules may be written in Unicode (``жаңалықтар.demo``); DNS queries, SNI and Host
    headers carry the punycode A-label. Names IDNA cannot encode (garbage from a
    fuzzed ClientHello) are only lower-cased, so they still compare safely.
    """
    name = name.strip().rstrip(".").lower()
    if not name or name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name


class NameRules(Generic[T]):
    """Per-name values with a default: exact names and ``*.suffix`` wildcards.

    The lookup is case-insensitive and IDNA-aware; an exact entry wins over a
    wildcard, and a longer wildcard suffix wins over a shorter one.
    """

    def __init__(self, default: T, rules: Mapping[str, T] | None = None) -> None:
        self.default = default
        self._exact: dict[str, T] = {}
        self._suffix: dict[str, T] = {}
        for name, value in (rules or {}).items():
            self.set(name, value)

    def set(self, name: str, value: T) -> None:
        if name.startswith("*."):
            self._suffix[normalize_name(name[2:])] = value
        else:
            self._exact[normalize_name(name)] = value

    def lookup(self, name: str | None) -> T:
        if name is None:
            return self.default
        name = normalize_name(name)
        if name in self._exact:
            return self._exact[name]
        labels = name.split(".")
        for i in range(1, len(labels)):
            value = self._suffix.get(".".join(labels[i:]))
            if value is not None:
                return value
        return self.default


def parse_rule_map(data: object, parse: Callable[[str], T], default: str) -> NameRules[T]:
    """Build :class:`NameRules` from a ``{"default": spec, "rules": {name: spec}}`` object.

    Raises ValueError naming the bad entry, so a SIGHUP reload can keep the old rules.
    """
    if not isinstance(data, dict):
        raise ValueError("rules file must hold a JSON object")
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        raise ValueError('"rules" must be an object {name: behaviour}')
    parsed = NameRules(parse(str(data.get("default", default))))
    for name, spec in rules.items():
        try:
            parsed.set(str(name), parse(str(spec)))
        except ValueError as exc:
            raise ValueError(f"rule for {name!r}: {exc}") from None
    return parsed


def bind_tcp(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening, non-blocking TCP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_udp(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def sock_address(sock: socket.socket) -> HostPort:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def original_destination(sock: socket.socket | object) -> HostPort | None:
    """Where an iptables-REDIRECTed IPv4 connection was going (None if unknown)."""
    getsockopt = getattr(sock, "getsockopt", None)
    if getsockopt is None:
        return None
    try:
        raw = getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), int(port)


class TaskTracker:
    """Connection-handler tasks of one server, cancelled together on stop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def full(self) -> bool:
        return len(self._tasks) >= self.limit

    def add_current(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def spawn(self, coro: Coroutine[object, None, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self, timeout: float = STOP_TIMEOUT) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


async def close_server(server: asyncio.AbstractServer | None, tracker: TaskTracker) -> None:
    """Stop listening, cancel live connections, and wait (bounded) for the server to close."""
    if server is None:
        return
    server.close()
    await tracker.cancel_all()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)


class Service:
    """Async start/stop lifecycle with ``async with`` support."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def addresses(self) -> dict[str, str]:
        """Bound addresses by role (``{"tcp": "127.0.0.1:8080"}``), for READY lines."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


class OneAddress:
    """Mixin for services listening on one address (DNS server, relays, MITM box)."""

    _address: HostPort | None = None  # set by start()

    @property
    def address(self) -> HostPort:
        """The bound listening address (the port chosen when 0 was asked for)."""
        if self._address is None:
            raise RuntimeError("not started")
        return self._address
