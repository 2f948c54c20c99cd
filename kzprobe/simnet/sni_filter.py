"""A DPI box: reads the SNI (or Host) of each connection and blocks, slows or relays it.

It sits in front of a site as a TCP relay, like an ISP's filter on the path. For each
connection it reads at most ``peek_bytes`` within ``peek_timeout``, names the
connection with :func:`kzprobe.simnet.sni.sniff`, and applies the action of the first
matching rule:

``pass``            relay transparently to the upstream
``reset``           abort with a real TCP RST (SO_LINGER 0)
``blackhole``       swallow everything and never answer (Kazakhstan 2023-24: TLS timeout)
``fin``             clean close right after the ClientHello / request
``delay:<s>``       relay, but hold the server's bytes ``s`` seconds (KZ 2022-23 throttling)
``rate:<bytes/s>``  relay, with the server-to-client direction capped to that rate
``divert:<ip:port>`` relay to another upstream (e.g. a MITM box) for this name
``blockpage``       answer an HTTP request with the blockpage (see :mod:`.blockpage`)

Rules files are JSON: ``{"default": "pass", "rules": {"vpn.demo": "reset", "*.x": "fin"}}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from kzprobe.simnet import relay
from kzprobe.simnet.common import (
    HostPort,
    NameRules,
    original_destination,
    parse_hostport,
    parse_rule_map,
)
from kzprobe.simnet.sni import Sniff, sniff
from kzprobe.simnet.stream import StreamService

ActionKind = Literal["pass", "reset", "blackhole", "fin", "delay", "rate", "divert", "blockpage"]
Upstream = HostPort | Literal["original"] | None
_SIMPLE: tuple[ActionKind, ...] = ("pass", "reset", "blackhole", "fin", "blockpage")


@dataclass(frozen=True, slots=True)
class Action:
    """One parsed filter action (see the module docstring for the spellings)."""

    kind: ActionKind
    seconds: float = 0.0
    rate: float | None = None
    target: HostPort | None = None

    @classmethod
    def parse(cls, spec: str) -> Action:
        kind, _, arg = spec.strip().partition(":")
        if kind in _SIMPLE and not arg:
            return cls(kind)
        if kind == "delay" and arg:
            return cls("delay", seconds=_positive(arg))
        if kind == "rate" and arg:
            return cls("rate", rate=_positive(arg))
        if kind == "divert" and arg:
            return cls("divert", target=parse_hostport(arg))
        raise ValueError(f"unknown filter action {spec!r}")

    @property
    def relays(self) -> bool:
        return self.kind in ("pass", "delay", "rate", "divert")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Seen:
    """One connection as the filter judged it (kept in a bounded log for tests)."""

    protocol: str
    name: str | None
    action: str


class SniFilter(StreamService):
    """The TCP relay; see the module docstring. ``upstream="original"`` uses SO_ORIGINAL_DST."""

    def __init__(self, listen: HostPort, upstream: Upstream, *,
                 rules: NameRules[Action] | None = None, peek_bytes: int = 16 * 1024,
                 peek_timeout: float = 2.0, idle_timeout: float = 30.0,
                 connect_timeout: float = 5.0, blackhole_seconds: float = 120.0,
                 max_connections: int = 512, blockpage: bytes | None = None,
                 exempt: frozenset[str] = frozenset()) -> None:
        super().__init__(listen, max_connections)
        # Client addresses the censor does not touch: the "outside" vantage (a control
        # helper), whose traffic to the same site must see the real thing.
        self.exempt = exempt
        self.upstream = upstream
        self.rules = rules or NameRules(Action("pass"))
        self.peek_bytes, self.peek_timeout = peek_bytes, peek_timeout
        self.idle_timeout, self.connect_timeout = idle_timeout, connect_timeout
        self.blackhole_seconds = blackhole_seconds
        self.blockpage = blockpage
        self.default_spec = "pass"  # default action when a rules file names none
        self.seen: collections.deque[Seen] = collections.deque(maxlen=1024)

    # ----------------------------------------------------------------- lifecycle

    def _server_options(self) -> dict[str, Any]:
        return {"limit": self.peek_bytes}

    def set_rules(self, rules: NameRules[Action]) -> None:
        self.rules = rules

    def set_rule(self, name: str, spec: str) -> None:
        self.rules.set(name, Action.parse(spec))

    def load_rules(self, data: object) -> None:
        """Replace the rules from a parsed JSON rules file; ValueError keeps the old ones."""
        self.rules = parse_rule_map(data, Action.parse, self.default_spec)

    # ----------------------------------------------------------------- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tracker.full:
            relay.abort_with_rst(writer)
            return
        self._tracker.add_current()
        started = asyncio.get_running_loop().time()
        try:
            first, seen = await self._peek(reader)
            peer = writer.get_extra_info("peername")
            exempt = bool(peer) and peer[0] in self.exempt
            action = Action("pass") if exempt else self.rules.lookup(seen.name)
            self.seen.append(Seen(seen.protocol, seen.name, action.kind))
            await self._apply(action, seen, first, reader, writer, started)
        except (Exception, asyncio.CancelledError):
            # Stopping, or a broken peer: drop the connection. Not re-raising the
            # cancellation is deliberate: this is the task's top frame, and Python 3.11's
            # start_server callback logs a traceback for every cancelled handler.
            writer.transport.abort()
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _peek(self, reader: asyncio.StreamReader) -> tuple[bytes, Sniff]:
        """Read until the name is known, or the byte/time bound is hit."""
        data = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.peek_timeout):
                while len(data) < self.peek_bytes:
                    chunk = await reader.read(self.peek_bytes - len(data))
                    if not chunk:
                        break
                    data += chunk
                    result = sniff(data)
                    if result is not None:
                        return data, result
        result = sniff(data)
        return data, result or Sniff("tls" if data[:1] == b"\x16" else "other")

    async def _apply(self, action: Action, seen: Sniff, first: bytes,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     started: float) -> None:
        if action.kind == "reset":
            relay.abort_with_rst(writer)
        elif action.kind == "blackhole":
            await relay.swallow(reader, self.blackhole_seconds)
        elif action.kind == "fin":
            await relay.close_with_fin(writer, reader)
        elif action.kind == "blockpage":
            await self._send_blockpage(seen, reader, writer)
        else:
            await self._relay(action, first, reader, writer, started)

    async def _send_blockpage(self, seen: Sniff, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        if seen.protocol == "http" and self.blockpage is not None:
            writer.write(self.blockpage)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
        await relay.close_with_fin(writer, reader)

    def _upstream_for(self, action: Action, writer: asyncio.StreamWriter) -> HostPort | None:
        if action.target is not None:
            return action.target
        if self.upstream == "original":
            target = original_destination(writer.get_extra_info("socket"))
            return None if target == self._address else target  # never loop to ourselves
        return self.upstream

    async def _relay(self, action: Action, first: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, started: float) -> None:
        target = self._upstream_for(action, writer)
        if target is None:
            relay.abort_with_rst(writer)
            return
        try:
            s_reader, s_writer = await asyncio.wait_for(
                asyncio.open_connection(*target, limit=relay.CHUNK), self.connect_timeout)
        except (OSError, TimeoutError):
            relay.abort_with_rst(writer)  # as if the site itself refused
            return
        s_writer.write(first)
        shaping = relay.Shaping(delay=action.seconds, rate=action.rate)
        await relay.relay((reader, writer), (s_reader, s_writer), idle=self.idle_timeout,
                          shaping=shaping, started=started)
