"""The configuration as frozen dataclasses. Their field defaults are the only defaults: the
parsers read them (``d.<field>``), so an empty config is ``Config()``. A Config is pickled to
the analysis worker, so everything here is plain data."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kzprobe.netaddr import join_hostport

Compression = Literal["gzip", "zstd", "none"]
StoreBodies = Literal["anomalous", "always", "never"]
WebhookFormat = Literal["json", "slack", "matrix", "text"]
AnchorScope = Literal["domestic", "international"]
RESOLVERS_ANCHOR = "resolvers"  # the anchor entry that stands for the configured resolvers
MAX_PROBE_ID = 32
_PROBE_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_PROBE_ID}}}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    """Who is measuring: reported in every record."""

    cc: str = "ZZ"
    asn: str = "AS0"
    network_name: str = ""
    public_ip: tuple[str, ...] = ()  # scrubbed from records (with helper-reported ones)
    id: str | None = None  # names segments and records; None: the output dir's stored id


ResolverProtocol = Literal["udp", "dot", "doh"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolver:
    """One DNS resolver: ``system`` (getaddrinfo), an ``ip:port`` to query over UDP, DNS
    over TLS (``tls://ip:853?sni=NAME``) or DNS over HTTPS (``https://name/dns-query``)."""

    address: str  # "system", an IP literal, or for DoH the bootstrap IP ("" : getaddrinfo)
    port: int = 53
    protocol: ResolverProtocol = "udp"
    server_name: str = ""  # DoT's SNI, DoH's URL host: the name the certificate must have
    url: str = ""  # DoH: the query URL (without ``bootstrap``)

    @property
    def is_system(self) -> bool:
        return self.address == "system"

    @property
    def is_encrypted(self) -> bool:
        return self.protocol in ("dot", "doh")

    @property
    def resolver_address(self) -> str:
        """What a lookup records as ``resolver_address`` (OONI's: ip:port, or DoH's URL)."""
        return str(self)

    def __str__(self) -> str:
        if self.protocol == "doh":
            return self.url
        return "system" if self.is_system else join_hostport(self.address, self.port)


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
    daily_bytes: int | None = None  # network bytes per UTC day (x_bytes); None: no budget


@dataclass(frozen=True, slots=True, kw_only=True)
class Http3Config:
    """HTTP/3 in web_connectivity: fetched over QUIC when a response advertises ``h3``."""

    always: bool = False  # also try HTTP/3 for every https URL, advertised or not


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


DEFAULT_GROUP = "default"  # the group of ``[targets] urls/files``, swept every ``[schedule]``


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetGroup:
    """``[[targets.groups]]``: targets swept on a schedule of their own (a watchlist), sharing
    the one rate limit and worker pool; a group with a shorter interval is served first."""

    name: str
    interval: float = 60.0  # seconds between this group's sweep starts
    jitter: float | None = None  # None: [schedule] jitter
    urls: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    body_bytes: int | None = None  # body snapshot cap for this group; None: [limits] body_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetConfig:
    urls: tuple[str, ...] = ()  # with files: the default group, swept every [schedule] interval
    files: tuple[Path, ...] = ()
    groups: tuple[TargetGroup, ...] = ()


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
class ControlHelper:
    """One control helper and the token sent to it (and to no other helper)."""

    url: str
    token: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    helpers: tuple[ControlHelper, ...] = ()  # tried in order
    concurrency: int = 20  # control requests in flight (OONI's helpers answer 503 above 25)

    @property
    def helper_urls(self) -> tuple[str, ...]:
        return tuple(helper.url for helper in self.helpers)


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
    # moria1, 3478 and 19302 STUN; encrypted-dns.csv: 853 DoT). Not a port scanner for
    # anything else.
    allowed_ports: frozenset[int] = frozenset({80, 443, 853, 3478, 5222, 9201, 19302})
    # Body bytes fetched per request, all redirect hops together. Not below the probe's
    # default limits.body_bytes: the control's body_length is compared with the probe's.
    max_fetch_bytes: int = 512 * 1024
    client_bytes_per_minute: int = 64 * 1024 * 1024  # body bytes fetched per client; 429 above
    max_requests_per_minute: int = 6000  # all clients together; 503 above
    max_connections_per_client: int = 64  # per client address (/64 for IPv6), at accept
    per_destination: int = 32  # the helper's concurrent connections per destination IP
    access_log_sample: float = 1.0  # fraction of requests logged (JSON, client as /24 or /48)


@dataclass(frozen=True, slots=True, kw_only=True)
class GeoipConfig:
    """MaxMind DB files (DB-IP "IP to ASN Lite" / GeoLite2-ASN, and a country database)."""

    asn_db: Path | None = None  # None: answers keep asn 0, probe_asn comes from [probe] only
    country_db: Path | None = None  # None: probe_cc comes from [probe] only
    recheck_interval: float = 3600.0  # seconds between looks at the files for a refresh


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    shutdown_grace: float = 20.0
    metrics_listen: str = "127.0.0.1:9108"  # "" turns the metrics and /healthz server off


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """One receiver of change events; its token goes to it alone (never shown in a repr)."""

    url: str
    format: WebhookFormat = "json"
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    """``[alerts]``: when a change of a target's state counts, and who is told."""

    confirm: int = 2  # consecutive agreeing sweeps before a change is confirmed
    webhooks: tuple[Webhook, ...] = ()
    heartbeat_url: str = ""  # "" = off; POSTed after every finished sweep
    group_above: int = 5  # more changes in one sweep and network: one grouped message
    group_first: int = 10  # changes listed by name in a grouped message
    timeout: float = 10.0  # seconds per POST
    max_backoff: float = 300.0  # retry backoff cap (exponential from 1 s, with jitter)
    max_pending: int = 10000  # undelivered events kept per webhook (oldest dropped)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadConfig:
    """``[upload]``: opt-in submission of records to an OONI collector (kzprobe.upload)."""

    ooni_collector: str = ""  # "" = off; the collector's base URL (https; http to loopback only)
    timeout: float = 30.0  # seconds per collector request
    max_backoff: float = 900.0  # retry backoff cap (exponential from 2 s, with jitter)
    max_in_flight: int = 4  # measurements submitted at once


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """One connectivity anchor: a target URI kzprobe measures (or ``resolvers``), and
    whether reaching it crosses the country's border."""

    target: str
    scope: AnchorScope


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    """``[network]``: anchors that tell an outage from a block (kzprobe.network)."""

    interval: float = 30.0  # seconds between anchor checks (and one right before each sweep)
    anchors: tuple[Anchor, ...] = ()  # none: the network state is not monitored
    outage_rate: float = 0.1  # during an outage, targets are swept at this fraction of the rate
    confirm: int = 2  # consecutive checks that agree before an outage or degradation is confirmed
    recover: int = 2  # consecutive checks that agree before a recovery is confirmed
    recheck: float = 5.0  # seconds to the next check while a change waits for confirmation
    degraded_factor: float = 3.0  # an anchor is slow above this multiple of its own baseline ...
    degraded_min_seconds: float = 0.5  # ... and at least this much slower than it
    baseline_samples: int = 20  # rolling baseline: the median of this many normal checks
    baseline_min_samples: int = 3  # no degradation is judged on fewer samples than this


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
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    geoip: GeoipConfig = field(default_factory=GeoipConfig)
    http3: Http3Config = field(default_factory=Http3Config)
    upload: UploadConfig = field(default_factory=UploadConfig)


def valid_probe_id(text: str) -> bool:
    """A probe id is short and safe in a file name: ``[A-Za-z0-9_-]{1,32}``."""
    return _PROBE_ID.fullmatch(text) is not None
