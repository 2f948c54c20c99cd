"""Configuration: parsed once, at the edge, into frozen dataclasses.

Nothing below the CLI reads files, the environment or argv for settings; everything
it needs arrives as a :class:`Config`. Errors are :class:`ConfigError` with the file,
key and (where known) line, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from kzprobe.errors import ConfigError

Compression = Literal["gzip", "zstd", "none"]
StoreBodies = Literal["anomalous", "always", "never"]

DEFAULT_CONFIG_PATH = Path("config/kzprobe.toml")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; never read /dev/zero or a 1 GB line whole


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    """Who is measuring: reported in every record."""

    cc: str = "ZZ"
    asn: str = "AS0"
    network_name: str = ""
    public_ip: str | None = None  # scrubbed from records when known


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolver:
    """One DNS resolver: ``system`` (getaddrinfo) or an ``ip:port`` to query over UDP."""

    address: str  # "system" or an IP literal
    port: int = 53

    @property
    def is_system(self) -> bool:
        return self.address == "system"

    def __str__(self) -> str:
        if self.is_system:
            return "system"
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsConfig:
    resolvers: tuple[Resolver, ...] = (Resolver(address="system"),)
    query_aaaa: bool = True
    tries: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    ca_file: Path | None = None  # None: the Mozilla bundle from certifi
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    max_chain_bytes: int = 256 * 1024  # bound on stored peer certificates


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutConfig:
    """Per-step deadlines in seconds."""

    dns: float = 4.0
    connect: float = 10.0
    tls: float = 10.0
    http: float = 10.0
    control: float = 30.0
    measurement: float = 60.0  # whole-measurement backstop


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitConfig:
    rate: float = 50.0  # measurements started per second (token bucket)
    burst: int = 50  # token-bucket capacity
    concurrency: int = 200  # measurements in flight
    per_host: int = 4  # concurrent connections per destination IP
    body_bytes: int = 512 * 1024  # body snapshot cap
    max_redirects: int = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleConfig:
    interval: float = 3600.0  # seconds between sweep starts
    jitter: float = 0.1  # +- fraction of interval


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputConfig:
    dir: Path = Path("data")
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_seconds: float = 300.0
    compress: Compression = "gzip"
    fsync_interval: float = 1.0
    store_bodies: StoreBodies = "anomalous"
    prefix: str = "kzprobe"
    max_total_bytes: int | None = None  # retention: delete oldest closed segments above this
    max_age_days: float | None = None  # retention: delete closed segments older than this


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetConfig:
    urls: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisConfig:
    not_bogon: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    retries: int = 2
    benign_sni: str = "example.com"
    throttle_min_seconds: float = 2.0
    throttle_factor: float = 5.0
    fingerprint_files: tuple[Path, ...] = ()  # extra OONI-format fingerprint CSVs
    worker_process: bool = True  # judge in a process of its own, off the measuring loop
    worker_timeout: float = 30.0  # seconds for one record's analysis before the worker is killed


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    helper_urls: tuple[str, ...] = ()
    helper_token: str | None = None
    concurrency: int = 20  # control requests in flight (OONI's helpers answer 503 above 25)


@dataclass(frozen=True, slots=True, kw_only=True)
class HelperConfig:
    """``kzprobe helper``: the OONI-compatible control vantage (faces the internet)."""

    listen: str = "127.0.0.1:8765"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_in_flight: int = 64  # 503 above this (oohelperd: 25)
    max_body_bytes: int = 64 * 1024  # request body; 413 above
    deadline: float = 30.0  # per request
    rate_per_client: float = 50.0  # requests per second per client address (429 above)
    rate_burst: int = 100
    max_endpoints: int = 16
    bind_address: str | None = None  # source address for the helper's own connections
    # WireGuard servers answer registered peers only: server public key -> this helper's
    # registered (private_key_file, psk_file or None), used for wireguard:// controls.
    wireguard_peers: tuple[tuple[str, Path, Path | None], ...] = ()
    client_timeout: float = 10.0  # a whole request must arrive within this (slowloris)
    max_connections: int = 1024  # open client connections; more are closed on accept
    # An anonymous helper on a non-loopback address is an open proxy: refused unless this.
    allow_anonymous: bool = False
    # Peers whose X-Forwarded-For / Forwarded name the client (a reverse proxy in front).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Ports the helper dials: web, plus those of the bundled endpoint presets
    # (config/targets/messaging.csv: 5222 XMPP/WhatsApp; circumvention.csv: 9201 Tor
    # moria1, 3478 and 19302 STUN). Not a port scanner for anything else.
    allowed_ports: frozenset[int] = frozenset({80, 443, 3478, 5222, 9201, 19302})
    # Body bytes fetched per request, all redirect hops together. Not below the probe's
    # default limits.body_bytes: the control's body_length is compared with the probe's.
    max_fetch_bytes: int = 512 * 1024
    client_bytes_per_minute: int = 64 * 1024 * 1024  # body bytes fetched per client; 429 above
    max_requests_per_minute: int = 6000  # all clients together; 503 above
    max_connections_per_client: int = 64  # per client address (/64 for IPv6), at accept
    per_destination: int = 32  # the helper's concurrent connections per destination IP
    access_log_sample: float = 0.01  # fraction of requests logged (JSON, client as /24 or /48)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    shutdown_grace: float = 20.0
    metrics_listen: str = "127.0.0.1:9108"  # "" turns the metrics and /healthz server off


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole, validated configuration."""

    source: Path | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    limits: LimitConfig = field(default_factory=LimitConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    helper: HelperConfig = field(default_factory=HelperConfig)


# --------------------------------------------------------------------------- parsing


class _Section:
    """Typed reads from one TOML table, with errors that name file and key."""

    def __init__(self, where: str, name: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.name = name
        self.table = table
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}: [{self.name}] {key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self._key(key)}: expected a number, got a boolean")
        if not isinstance(value, kind):
            wanted = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigError(f"{self._key(key)}: expected {wanted}, got {type(value).__name__}")
        return value

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, positive: bool = True
    ) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):  # TOML has nan and inf; no deadline or rate is either
            raise ConfigError(f"{self._key(key)}: must be a finite number, got {value:g}")
        if positive and value <= minimum:
            raise ConfigError(f"{self._key(key)}: must be > {minimum:g}, got {value:g}")
        if not positive and value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum:g}, got {value:g}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum}, got {value}")
        return int(value)

    def string(self, key: str, default: Any) -> Any:
        return self.get(key, str, default)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, (list, str), list(default))
        if isinstance(value, str):
            value = [value]
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{self._key(key)}: expected a list of strings")
        return tuple(value)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value: str = self.string(key, default)
        if value not in allowed:
            raise ConfigError(
                f"{self._key(key)}: must be one of {', '.join(allowed)}; got {value!r}"
            )
        return value

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._key(key)}: {message}")

    def unknown_keys(self) -> list[str]:
        return [
            f"{self.where}: [{self.name}] unknown key {k!r}"
            for k in self.table
            if k not in self.used
        ]


def parse_resolver(spec: str) -> Resolver:
    """Parse ``system``, ``ip``, ``ip:port`` or ``[v6]:port``; raise ValueError otherwise."""
    spec = spec.strip()
    if spec == "system":
        return Resolver(address="system")
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad resolver {spec!r}")
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {spec!r}")
    return Resolver(address=host, port=port)


def _resolve_path(base: Path | None, value: str) -> Path:
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~nosuchuser/...": left as written, reported as a missing file
        pass
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def _networks(
    section: _Section, key: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in section.strings(key, ()):
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise section.fail(key, f"not an IP network: {item!r}") from None
    return tuple(nets)


def _parse_probe(s: _Section) -> ProbeConfig:
    asn = s.string("asn", "AS0")
    if not (asn.startswith("AS") and asn[2:].isascii() and asn[2:].isdigit()):
        raise s.fail("asn", f"expected 'AS<number>', got {asn!r}")
    cc = s.string("cc", "ZZ")
    if len(cc) != 2 or not (cc.isascii() and cc.isalpha()):
        raise s.fail("cc", f"expected a two-letter country code, got {cc!r}")
    public_ip = s.string("public_ip", None)
    if public_ip is not None:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            raise s.fail("public_ip", f"not an IP address: {public_ip!r}") from None
    return ProbeConfig(
        cc=cc.upper(), asn=asn, network_name=s.string("network_name", ""), public_ip=public_ip
    )


def _parse_dns(s: _Section) -> DnsConfig:
    resolvers = []
    for spec in s.strings("resolvers", ("system",)):
        try:
            resolvers.append(parse_resolver(spec))
        except ValueError:
            raise s.fail(
                "resolvers", f"expected 'system', 'ip' or 'ip:port', got {spec!r}"
            ) from None
    if not resolvers:
        raise s.fail("resolvers", "at least one resolver is needed")
    return DnsConfig(
        resolvers=tuple(resolvers),
        query_aaaa=s.get("query_aaaa", bool, True),
        tries=s.integer("tries", 1),
    )


def _parse_tls(s: _Section, base: Path | None) -> TlsConfig:
    ca = s.string("ca_file", None)
    ca_path = _resolve_path(base, ca) if ca else None
    if ca_path is not None and not ca_path.is_file():
        raise s.fail("ca_file", f"no such file: {ca_path}")
    return TlsConfig(
        ca_file=ca_path,
        alpn=s.strings("alpn", ("h2", "http/1.1")),
        max_chain_bytes=s.integer("max_chain_bytes", 256 * 1024, minimum=1024),
    )


def _parse_timeouts(s: _Section) -> TimeoutConfig:
    d = TimeoutConfig()
    return TimeoutConfig(**{f.name: s.number(f.name, getattr(d, f.name)) for f in fields(d)})


def _parse_limits(s: _Section) -> LimitConfig:
    d = LimitConfig()
    return LimitConfig(
        rate=s.number("rate", d.rate),
        burst=s.integer("burst", d.burst),
        concurrency=s.integer("concurrency", d.concurrency),
        per_host=s.integer("per_host", d.per_host),
        body_bytes=s.integer("body_bytes", d.body_bytes, minimum=1024),
        max_redirects=s.integer("max_redirects", d.max_redirects, minimum=0),
    )


def _parse_schedule(s: _Section) -> ScheduleConfig:
    jitter = s.number("jitter", 0.1, positive=False)
    if jitter >= 1:
        raise s.fail("jitter", "must be a fraction below 1")
    return ScheduleConfig(interval=s.number("interval", 3600.0), jitter=jitter)


def _parse_output(s: _Section, base: Path | None) -> OutputConfig:
    d = OutputConfig()
    prefix = s.string("prefix", d.prefix)
    if not prefix or "/" in prefix or prefix.startswith("."):
        raise s.fail("prefix", f"must be a plain file-name prefix, got {prefix!r}")
    return OutputConfig(
        dir=_resolve_path(base, s.string("dir", str(d.dir))),
        rotate_bytes=s.integer("rotate_bytes", d.rotate_bytes, minimum=1024),
        rotate_seconds=s.number("rotate_seconds", d.rotate_seconds),
        compress=s.choice("compress", d.compress, ("gzip", "zstd", "none")),  # type: ignore[arg-type]
        fsync_interval=s.number("fsync_interval", d.fsync_interval),
        store_bodies=s.choice(
            "store_bodies",
            d.store_bodies,  # type: ignore[arg-type]
            ("anomalous", "always", "never"),
        ),
        prefix=prefix,
        max_total_bytes=_optional_positive(s, "max_total_bytes", int),
        max_age_days=_optional_positive(s, "max_age_days", (int, float)),
    )


def _optional_positive(s: _Section, key: str, kind: type | tuple[type, ...]) -> Any:
    """An optional limit: absent or 0 means off, otherwise it must be positive."""
    value = s.get(key, kind, None)
    if value is None or value == 0:
        return None
    if value < 0:
        raise s.fail(key, f"must be > 0 (or 0 for off), got {value}")
    return value


def _parse_targets(s: _Section, base: Path | None) -> TargetConfig:
    files = tuple(_resolve_path(base, f) for f in s.strings("files", ()))
    return TargetConfig(urls=s.strings("urls", ()), files=files)


def _parse_analysis(s: _Section, base: Path | None) -> AnalysisConfig:
    d = AnalysisConfig()
    files = tuple(_resolve_path(base, f) for f in s.strings("fingerprint_files", ()))
    for path in files:
        if not path.is_file():
            raise s.fail("fingerprint_files", f"no such file: {path}")
    return AnalysisConfig(
        not_bogon=_networks(s, "not_bogon"),
        retries=s.integer("retries", d.retries, minimum=0),
        benign_sni=s.string("benign_sni", d.benign_sni),
        throttle_min_seconds=s.number("throttle_min_seconds", d.throttle_min_seconds),
        throttle_factor=s.number("throttle_factor", d.throttle_factor, minimum=1.0),
        fingerprint_files=files,
        worker_process=s.get("worker_process", bool, d.worker_process),
        worker_timeout=s.number("worker_timeout", d.worker_timeout),
    )


def _parse_control(s: _Section) -> ControlConfig:
    urls = s.strings("helper_url", ())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise s.fail("helper_url", f"expected an http(s) URL, got {url!r}")
    return ControlConfig(helper_urls=urls, helper_token=s.string("helper_token", None),
                         concurrency=s.integer("concurrency", ControlConfig().concurrency))


def _host_port(s: _Section, key: str, default: str) -> str:
    value: str = s.string(key, default)
    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() is also true for "²", which int() rejects
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise s.fail(key, f"expected 'host:port', got {value!r}")
    return value


def _parse_helper(s: _Section, base: Path | None) -> HelperConfig:
    d = HelperConfig()
    token: str | None = s.string("token", None)
    cert, key = s.string("tls_cert", None), s.string("tls_key", None)
    if bool(cert) != bool(key):
        raise s.fail("tls_cert", "tls_cert and tls_key go together")
    paths = [_resolve_path(base, p) if p else None for p in (cert, key)]
    for name, path in zip(("tls_cert", "tls_key"), paths, strict=True):
        if path is not None and not path.is_file():
            raise s.fail(name, f"no such file: {path}")
    return HelperConfig(
        listen=_host_port(s, "listen", d.listen), token=token,
        tls_cert=paths[0], tls_key=paths[1], allow_nets=_networks(s, "allow_nets"),
        max_in_flight=s.integer("max_in_flight", d.max_in_flight),
        max_body_bytes=s.integer("max_body_bytes", d.max_body_bytes, minimum=1024),
        deadline=s.number("deadline", d.deadline),
        rate_per_client=s.number("rate_per_client", d.rate_per_client),
        rate_burst=s.integer("rate_burst", d.rate_burst),
        max_endpoints=s.integer("max_endpoints", d.max_endpoints),
        bind_address=_optional_ip(s, "bind_address"),
        wireguard_peers=_wireguard_peers(s, base),
        client_timeout=s.number("client_timeout", d.client_timeout),
        max_connections=s.integer("max_connections", d.max_connections),
        allow_anonymous=_anonymous_ok(s, token),
        trusted_proxies=_networks(s, "trusted_proxies"),
        allowed_ports=_ports(s, "allowed_ports", d.allowed_ports),
        max_fetch_bytes=s.integer("max_fetch_bytes", d.max_fetch_bytes, minimum=1024),
        client_bytes_per_minute=s.integer("client_bytes_per_minute", d.client_bytes_per_minute,
                                          minimum=1024),
        max_requests_per_minute=s.integer("max_requests_per_minute",
                                          d.max_requests_per_minute),
        max_connections_per_client=s.integer("max_connections_per_client",
                                             d.max_connections_per_client),
        per_destination=s.integer("per_destination", d.per_destination),
        access_log_sample=_fraction(s, "access_log_sample", d.access_log_sample),
    )


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (brackets allowed); any other name is not."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _anonymous_ok(s: _Section, token: str | None) -> bool:
    """A helper without a token may listen beyond loopback only when explicitly allowed."""
    allow = bool(s.get("allow_anonymous", bool, False))
    listen = _host_port(s, "listen", HelperConfig().listen)
    if not token and not allow and not is_loopback_host(listen.rpartition(":")[0]):
        raise s.fail("listen", f"{listen!r} is not loopback: set a token (or "
                     "allow_anonymous = true for a deliberately open helper)")
    return allow


def _ports(s: _Section, key: str, default: frozenset[int]) -> frozenset[int]:
    """A list of ports (1-65535) and "low-high" ranges, e.g. ``[80, 443, "1194-1195"]``."""
    value = s.get(key, list, None)
    if value is None:
        return default
    ports: set[int] = set()
    for item in value:
        low, high = _port_range(item)
        if not 0 < low <= high < 65536:
            raise s.fail(key, f"expected ports 1-65535 or 'low-high' ranges, got {item!r}")
        ports.update(range(low, high + 1))
    if not ports:
        raise s.fail(key, "expected at least one port")
    return frozenset(ports)


def _port_range(item: object) -> tuple[int, int]:
    if isinstance(item, int) and not isinstance(item, bool):
        return item, item
    low, sep, high = str(item).partition("-") if isinstance(item, str) else ("", "", "")
    if sep and low.isascii() and low.isdigit() and high.isascii() and high.isdigit() \
            and len(low) < 6 and len(high) < 6:
        return int(low), int(high)
    return 0, -1


def _fraction(s: _Section, key: str, default: float) -> float:
    value = s.number(key, default, positive=False)
    if value > 1:
        raise s.fail(key, f"must be between 0 and 1, got {value:g}")
    return value


def _wireguard_peers(s: _Section, base: Path | None) -> tuple[tuple[str, Path, Path | None], ...]:
    peers = []
    for index, entry in enumerate(s.get("wireguard_peers", list, [])):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("public_key"), str) \
                or not isinstance(entry.get("private_key_file"), str):
            raise s.fail("wireguard_peers",
                         f"{where}: expected {{public_key = \"...\", private_key_file = \"...\"}}")
        psk = entry.get("psk_file")
        if psk is not None and not isinstance(psk, str):
            raise s.fail("wireguard_peers", f"{where}: psk_file must be a path")
        files = [_resolve_path(base, entry["private_key_file"]),
                 _resolve_path(base, psk) if psk else None]
        for path in files:
            if path is not None and not path.is_file():
                raise s.fail("wireguard_peers", f"{where}: no such file: {path}")
        peers.append((entry["public_key"], files[0], files[1]))
    return tuple(peers)  # type: ignore[arg-type]


def _optional_ip(s: _Section, key: str) -> str | None:
    value: str | None = s.string(key, None)
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise s.fail(key, f"not an IP address: {value!r}") from None
    return value


def _listen_ip(s: _Section, key: str, default: str) -> str:
    """``ip:port`` or ``[v6]:port`` with an IP literal (no name lookups); "" means off."""
    value: str = s.string(key, default)
    if value == "":
        return value
    _host_port(s, key, default)
    host = value.rpartition(":")[0]
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        raise s.fail(key, f"host must be an IP address, got {host!r}") from None
    return value


def _parse_service(s: _Section) -> ServiceConfig:
    return ServiceConfig(
        shutdown_grace=s.number("shutdown_grace", 20.0),
        metrics_listen=_listen_ip(s, "metrics_listen", "127.0.0.1:9108"),
    )


_SECTIONS: dict[str, Callable[..., Any]] = {
    "probe": _parse_probe,
    "dns": _parse_dns,
    "tls": _parse_tls,
    "timeouts": _parse_timeouts,
    "limits": _parse_limits,
    "schedule": _parse_schedule,
    "output": _parse_output,
    "targets": _parse_targets,
    "analysis": _parse_analysis,
    "control": _parse_control,
    "service": _parse_service,
    "helper": _parse_helper,
}
_NEEDS_BASE = {"tls", "output", "targets", "helper", "analysis"}
_FOREIGN_SECTIONS: set[str] = set()


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A parsed config plus the non-fatal problems found (unknown keys)."""

    config: Config
    warnings: tuple[str, ...]
    raw: Mapping[str, Any]


def parse_config(
    data: Mapping[str, Any],
    *,
    where: str = "<config>",
    base: Path | None = None,
    source: Path | None = None,
) -> LoadedConfig:
    """Build a :class:`Config` from a TOML mapping; raise :class:`ConfigError` on error."""
    warnings: list[str] = []
    parts: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS and name not in _FOREIGN_SECTIONS:
            warnings.append(f"{where}: unknown section [{name}]")
        elif not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    for name, parser in _SECTIONS.items():
        table = data.get(name, {})
        section = _Section(where, name, table if isinstance(table, dict) else {})
        parts[name] = parser(section, base) if name in _NEEDS_BASE else parser(section)
        warnings.extend(section.unknown_keys())
    return LoadedConfig(config=Config(source=source, **parts), warnings=tuple(warnings), raw=data)


def _read_config_text(path: Path) -> str:
    """The file's text, read at most MAX_CONFIG_BYTES + 1 bytes (it may be /dev/zero)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config larger than {MAX_CONFIG_BYTES} bytes")
        return data.decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def load_config(path: Path) -> LoadedConfig:
    """Read and parse a TOML config file; relative paths in it are relative to the file."""
    text = _read_config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or table: [[[[...
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return parse_config(data, where=str(path), base=path.resolve().parent, source=path)
