"""Who the helper may dial, who its client is, and each client's budgets.

The helper faces the internet: :class:`DialPolicy` keeps it off special-purpose addresses
(SSRF), :func:`client_address` names the client behind trusted proxies only, and
:class:`ClientTable` bounds per-client state however many sources come.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from kzprobe.bogons import is_special_purpose, parse_ip_loose
from kzprobe.config import Config
from kzprobe.measure.ratelimit import TokenBucket

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")
MAX_CLIENT_BUCKETS = 10_000


def prober_config(config: Config) -> Config:
    """The helper's own limits for its measuring steps: ``per_destination`` concurrent
    connections per address (the probe's ``per_host`` is for one probe, not for many
    clients at once) and no more body per hop than a whole request may fetch."""
    helper, limits = config.helper, config.limits
    return replace(config, limits=replace(
        limits, per_host=helper.per_destination,
        body_bytes=min(limits.body_bytes, helper.max_fetch_bytes)))


class ClientTable(Generic[T]):
    """Per-client state, at most ``capacity`` clients: the least recently seen goes first
    (a flood of new sources evicts only stale entries, never an active client's budget)."""

    def __init__(self, capacity: int, make: Callable[[], T]) -> None:
        self.capacity = capacity
        self._make = make
        self._entries: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._make()
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class Client:
    """One client's budgets: requests (a token bucket) and body bytes fetched per minute."""

    requests: TokenBucket
    bytes_left: float
    stamp: float

    def bytes_ok(self, per_minute: int) -> bool:
        now = time.monotonic()
        self.bytes_left = min(per_minute, self.bytes_left + (now - self.stamp) * per_minute / 60)
        self.stamp = now
        return self.bytes_left > 0


def client_bucket(ip: str) -> str:
    """The unit of per-client limits: one IPv4 address, or one IPv6 /64 (one subscriber)."""
    address = _ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else ip


def log_prefix(ip: str) -> str:
    """A client as the access log shows it: its /24 or /48, not the address itself."""
    address = _ip(ip)
    if address is None:
        return "?"
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((address, bits), strict=False))


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    address = _ip(ip)
    return address is not None and any(address in net for net in networks)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` hops of RFC 7239 ``Forwarded``, left to right, ports and quotes removed."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, node = pair.strip().partition("=")
            if name.strip().lower() != "for":
                continue
            node = node.strip().strip('"')
            if node.startswith("["):
                node = node[1:].partition("]")[0]
            elif node.count(":") == 1:
                node = node.partition(":")[0]
            hops.append(node)
    return hops


def client_address(peer: str, headers: Mapping[str, str],
                   trusted: tuple[Network, ...]) -> str:
    """The client: the TCP peer, or, when the peer is a trusted proxy, the rightmost hop of
    ``X-Forwarded-For`` (else ``Forwarded: for=``) that is not itself a trusted proxy.
    A hop that is not an IP address stops the walk at the last trusted address."""
    if not trusted or not in_networks(peer, trusted):
        return peer
    getall = getattr(headers, "getall", None)
    xff = getall("X-Forwarded-For", []) if getall else [headers.get("X-Forwarded-For", "")]
    hops = [hop.strip() for value in xff for hop in value.split(",") if hop.strip()]
    if not hops:
        forwarded = getall("Forwarded", []) if getall else [headers.get("Forwarded", "")]
        hops = [hop for value in forwarded for hop in _forwarded_for(value)]
    client = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        client = str(address)
        if not in_networks(client, trusted):
            break
    return client


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = parse_ip_loose(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class DialPolicy:
    """Which addresses the helper may connect to: public ones, plus ``allow_nets``."""

    def __init__(self, allow_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]):
        self.allow_nets = allow_nets

    def __call__(self, ip: str) -> bool:
        address = _ip(ip)
        if address is None:
            return False
        if any(address in net for net in self.allow_nets):
            return True
        return not is_special_purpose(address)
