"""Addresses in the config: resolvers, host:port listeners, networks, ports. host:port is
read by :mod:`kzprobe.netaddr`, as everywhere else, so a value checked here means the same
to the code that binds or dials it."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qs, urlsplit

from kzprobe.config.model import Resolver
from kzprobe.config.section import _Section
from kzprobe.netaddr import split_hostport

DOT_PORT = 853  # RFC 7858's port: a tls:// resolver's default
DOH_PATH = "/dns-query"  # RFC 8484's example path: an https:// resolver's default


def parse_resolver(spec: str) -> Resolver:
    """Parse ``system``, ``ip``, ``[v6]``, ``ip:port``, ``[v6]:port``, a DoT
    ``tls://ip[:port][?sni=NAME]`` or a DoH ``https://host[:port]/path[?bootstrap=IP]``;
    raise ValueError otherwise. The port, when given, is read by
    :func:`kzprobe.netaddr.split_hostport`."""
    spec = spec.strip()
    if spec == "system":
        return Resolver(address="system")
    if spec.startswith(("tls://", "https://")):
        return _encrypted_resolver(spec)
    if spec.startswith("[") and spec.endswith("]"):
        host, port = spec[1:-1], 53
    elif spec.startswith("[") or spec.count(":") == 1:
        parts = split_hostport(spec)
        if parts is None:
            raise ValueError(f"bad resolver {spec!r}")
        host, port = parts
    else:
        host, port = spec, 53
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {spec!r}")
    return Resolver(address=host, port=port)


def _encrypted_resolver(spec: str) -> Resolver:
    """DoT (the host an IP: the resolver is dialled without a lookup) or DoH (the host a
    name or IP; ``bootstrap`` an IP to dial instead of resolving the name)."""
    parts = urlsplit(spec)
    host, port = parts.hostname or "", parts.port  # .port raises ValueError when bad
    params = parse_qs(parts.query, keep_blank_values=True)
    allowed = {"sni"} if parts.scheme == "tls" else {"bootstrap"}
    if not host or parts.fragment or parts.username or not set(params) <= allowed \
            or any(len(v) != 1 or not v[0] for v in params.values()):
        raise ValueError(f"bad resolver {spec!r}")
    if parts.scheme == "tls":
        if parts.path not in ("", "/"):
            raise ValueError(f"bad resolver {spec!r}")
        ipaddress.ip_address(host)
        sni = params.get("sni", [host])[0]
        return Resolver(address=host, port=port or DOT_PORT, protocol="dot",
                        server_name=sni.lower())
    bootstrap = params.get("bootstrap", [""])[0]
    if bootstrap:
        ipaddress.ip_address(bootstrap)
    elif _is_ip(host):
        bootstrap = host
    netloc = parts.netloc.rsplit("@", 1)[-1]
    url = f"https://{netloc.lower()}{parts.path or DOH_PATH}"
    return Resolver(address=bootstrap, port=port or 443, protocol="doh",
                    server_name=host.lower(), url=url)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _networks(
    section: _Section, key: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in section.strings(key, ()):
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            return section.invalid(key, f"not an IP network: {item!r}", ())
    return tuple(nets)


def _host_port(s: _Section, key: str, default: str) -> str:
    """``host:port`` as :func:`kzprobe.netaddr.split_hostport` reads it (IPv6 in brackets)."""
    value: str = s.string(key, default)
    if split_hostport(value) is None:
        return s.invalid(key, f"expected 'host:port' (an IPv6 host in brackets), got {value!r}",
                         default)
    return value


def _listen_ip(s: _Section, key: str, default: str) -> str:
    """``ip:port`` or ``[v6]:port`` with an IP literal (no name lookups); "" means off."""
    value: str = _host_port(s, key, default) if s.string(key, default) else ""
    if value == "":  # off (or a bad value, recorded, whose default is off)
        return value
    host = host_of(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return s.invalid(key, f"host must be an IP address, got {host!r}", default)
    return value


def _optional_ip(s: _Section, key: str) -> str | None:
    value: str | None = s.string(key, None)
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return s.invalid(key, f"not an IP address: {value!r}", None)
    return value


def host_of(value: str) -> str:
    """The host of a checked ``host:port`` (IPv6 without its brackets); ValueError if none."""
    parts = split_hostport(value)
    if parts is None:
        raise ValueError(f"expected 'host:port', got {value!r}")
    return parts[0]


def metrics_exposure(listen: str) -> str | None:
    """Where an ``ip:port`` listener is reachable beyond this host, or None for loopback."""
    if not listen:
        return None
    host = host_of(listen)
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return None
    return "every address" if address.is_unspecified else f"the non-loopback address {host}"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (brackets allowed); any other name is not."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_host(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # "http://[::1/": not a URL a token may go to
        return False
    return is_loopback_host(host)


def _ports(s: _Section, key: str, default: frozenset[int]) -> frozenset[int]:
    """A list of ports (1-65535) and "low-high" ranges, e.g. ``[80, 443, "1194-1195"]``."""
    value = s.get(key, list, None)
    if value is None:
        return default
    ports: set[int] = set()
    for item in value:
        low, high = _port_range(item)
        if not 0 < low <= high < 65536:
            return s.invalid(key, f"expected ports 1-65535 or 'low-high' ranges, got {item!r}",
                             default)
        ports.update(range(low, high + 1))
    if not ports:
        return s.invalid(key, "expected at least one port", default)
    return frozenset(ports)


def _port_range(item: object) -> tuple[int, int]:
    if isinstance(item, int) and not isinstance(item, bool):
        return item, item
    low, sep, high = str(item).partition("-") if isinstance(item, str) else ("", "", "")
    if sep and low.isascii() and low.isdigit() and high.isascii() and high.isdigit() \
            and len(low) < 6 and len(high) < 6:
        return int(low), int(high)
    return 0, -1


# allow_nets lets the helper dial special-purpose addresses: its SSRF guard is off there.
ALLOW_NETS_MIN_PREFIX = {4: 8, 6: 16}  # shorter is an error: the guard off for a continent
ALLOW_NETS_WARN_PREFIX = {4: 16, 6: 48}  # shorter is allowed, with a warning


# IPv6 prefixes whose addresses embed any IPv4 address (mapped, compatible, NAT64, 6to4,
# Teredo): covering one of these wholesale opens every IPv4 address, loopback included.
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in (
    "::ffff:0:0/96", "::/96", "64:ff9b::/96", "2002::/16", "2001::/32"))


def _allow_nets(s: _Section) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = _networks(s, "allow_nets")
    for net in nets:
        embeds = isinstance(net, ipaddress.IPv6Network) and any(
            net.supernet_of(block) for block in _EMBEDS_IPV4)  # type: ignore[arg-type]
        if net.prefixlen < ALLOW_NETS_MIN_PREFIX[net.version] or embeds:
            raise s.fail("allow_nets", f"{net} is too wide: it turns the helper's guard "
                                       f"against private and special addresses (SSRF) off; "
                                       f"list the networks the helper must reach")
        if net.prefixlen < ALLOW_NETS_WARN_PREFIX[net.version]:
            s.warn("allow_nets", f"{net} opens {net.num_addresses} addresses to the helper, "
                                 f"past its SSRF guard; is so wide a network meant?")
    return nets
