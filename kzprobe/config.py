"""Configuration: parsed once, at the edge, into frozen dataclasses.

Nothing below the CLI reads files, the environment or argv for settings; everything
it needs arrives as a :class:`Config`. Errors are :class:`ConfigError` with the file,
key and (where known) line, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from kzprobe.errors import ConfigError
from kzprobe.localfiles import LocalFileError, MissingFileError, read_regular

Compression = Literal["gzip", "zstd", "none"]
StoreBodies = Literal["anomalous", "always", "never"]

DEFAULT_CONFIG_PATH = Path("config/kzprobe.toml")
MAX_PROBE_ID = 32
_PROBE_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_PROBE_ID}}}")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; never read /dev/zero or a 1 GB line whole
# Files a config names are read whole, bounded (kzprobe.localfiles): regular files only.
MAX_CA_FILE_BYTES = 16 << 20  # certifi's bundle is ~0.3 MiB
MAX_CERT_FILE_BYTES = 1 << 20  # the helper's certificate chain or key
MAX_KEY_FILE_BYTES = 256  # a WireGuard key file: one base64 line (probes.wireguard reads 256)
MAX_FINGERPRINT_BYTES = 16 * 1024 * 1024  # one local fingerprint CSV
# Upper bounds of numbers: every key has one, so no value makes a loop of 2**63 workers,
# an overflowing timer or a deadline nobody will see. Keys with a meaning get tighter ones.
DEFAULT_MAX_NUMBER = 1e9
DEFAULT_MAX_INTEGER = 1 << 50  # 1 PiB, as a byte count
DAY = 86400.0
MAX_TIMEOUT = DAY
MAX_BYTES = 1 << 40  # 1 TiB: a segment size, a retention budget
MAX_ALPN_BYTES = 255  # RFC 7301: a protocol name is 1..255 bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    """Who is measuring: reported in every record."""

    cc: str = "ZZ"
    asn: str = "AS0"
    network_name: str = ""
    public_ip: tuple[str, ...] = ()  # scrubbed from records (with helper-reported ones)
    id: str | None = None  # names segments and records; None: the output dir's stored id


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
        self.warnings: list[str] = []

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
        self, key: str, default: float, *, minimum: float = 0.0, positive: bool = True,
        maximum: float = DEFAULT_MAX_NUMBER,
    ) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):  # TOML has nan and inf; no deadline or rate is either
            raise ConfigError(f"{self._key(key)}: must be a finite number, got {value:g}")
        if positive and value <= minimum:
            raise ConfigError(f"{self._key(key)}: must be > {minimum:g}, got {value:g}")
        if not positive and value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum:g}, got {value:g}")
        if value > maximum:
            raise ConfigError(f"{self._key(key)}: must be <= {maximum:g}, got {value:g}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1,
                maximum: int = DEFAULT_MAX_INTEGER) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise ConfigError(f"{self._key(key)}: must be >= {minimum}, got {value}")
        if value > maximum:
            raise ConfigError(f"{self._key(key)}: must be <= {maximum}, got {value}")
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

    def warn(self, key: str, message: str) -> None:
        """A value that works but is dangerous: check-config prints it (--strict fails)."""
        self.warnings.append(f"{self._key(key)}: {message}")

    def read_file(self, key: str, path: Path, limit: int, what: str) -> bytes:
        """A file the config names: a regular file of at most ``limit`` bytes, read now."""
        try:
            return read_regular(path, limit, what)
        except LocalFileError as exc:
            raise self.fail(key, str(exc)) from None

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
    public_ip = s.strings("public_ip", ())
    for ip in public_ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise s.fail("public_ip", f"not an IP address: {ip!r}") from None
    probe_id = s.string("id", None)
    if probe_id is not None and not valid_probe_id(probe_id):
        raise s.fail("id", f"expected 1-{MAX_PROBE_ID} characters of A-Z a-z 0-9 _ -, "
                           f"got {probe_id!r}")
    return ProbeConfig(cc=cc.upper(), asn=asn, network_name=s.string("network_name", ""),
                       public_ip=public_ip, id=probe_id)


def valid_probe_id(text: str) -> bool:
    """A probe id is short and safe in a file name: ``[A-Za-z0-9_-]{1,32}``."""
    return _PROBE_ID.fullmatch(text) is not None


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
        tries=s.integer("tries", 1, maximum=10),
    )


def _parse_tls(s: _Section, base: Path | None) -> TlsConfig:
    ca = s.string("ca_file", None)
    ca_path = _resolve_path(base, ca) if ca else None
    alpn = _alpn(s)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_path is not None:
        data = s.read_file("ca_file", ca_path, MAX_CA_FILE_BYTES, "CA file")
        try:  # what the prober does at start (probes.tls.make_context), done here
            context.load_verify_locations(cadata=data.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise s.fail("ca_file", f"{ca_path}: not a PEM certificate bundle ({exc})") from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return TlsConfig(
        ca_file=ca_path,
        alpn=alpn,
        max_chain_bytes=s.integer("max_chain_bytes", 256 * 1024, minimum=1024,
                                  maximum=64 << 20),
    )


def _alpn(s: _Section) -> tuple[str, ...]:
    """RFC 7301 protocol names: 1..255 bytes each; printable ASCII (what OpenSSL is given)."""
    alpn = s.strings("alpn", TlsConfig().alpn)
    for name in alpn:
        if not 0 < len(name) <= MAX_ALPN_BYTES or not _printable_ascii(name):
            raise s.fail("alpn", f"each entry is 1..{MAX_ALPN_BYTES} printable ASCII "
                                 f"characters, got {name[:40]!r}")
    return alpn


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _parse_timeouts(s: _Section) -> TimeoutConfig:
    d = TimeoutConfig()
    return TimeoutConfig(**{f.name: s.number(f.name, getattr(d, f.name), maximum=MAX_TIMEOUT)
                            for f in fields(d)})


def _parse_limits(s: _Section) -> LimitConfig:
    d = LimitConfig()
    return LimitConfig(
        rate=s.number("rate", d.rate, maximum=1e6),
        burst=s.integer("burst", d.burst, maximum=1_000_000),
        concurrency=s.integer("concurrency", d.concurrency, maximum=100_000),  # one task each
        per_host=s.integer("per_host", d.per_host, maximum=100_000),
        body_bytes=s.integer("body_bytes", d.body_bytes, minimum=1024, maximum=1 << 30),
        max_redirects=s.integer("max_redirects", d.max_redirects, minimum=0, maximum=100),
    )


def _parse_schedule(s: _Section) -> ScheduleConfig:
    jitter = s.number("jitter", 0.1, positive=False)
    if jitter >= 1:
        raise s.fail("jitter", "must be a fraction below 1")
    return ScheduleConfig(interval=s.number("interval", 3600.0, maximum=30 * DAY), jitter=jitter)


def _parse_output(s: _Section, base: Path | None) -> OutputConfig:
    d = OutputConfig()
    prefix = s.string("prefix", d.prefix)
    # a file name, also in logs and shell loops: no "/", no control character (NUL, newline)
    if not prefix or "/" in prefix or prefix.startswith(".") or len(prefix) > 64 \
            or not prefix.isprintable():
        raise s.fail("prefix", f"must be a plain file-name prefix (up to 64 printable "
                               f"characters), got {prefix!r}")
    directory = s.string("dir", str(d.dir))
    if "\x00" in directory:
        raise s.fail("dir", f"must be a path, got {directory!r}")
    return OutputConfig(
        dir=_resolve_path(base, directory),
        rotate_bytes=s.integer("rotate_bytes", d.rotate_bytes, minimum=1024, maximum=MAX_BYTES),
        rotate_seconds=s.number("rotate_seconds", d.rotate_seconds, maximum=7 * DAY),
        compress=s.choice("compress", d.compress, ("gzip", "zstd", "none")),  # type: ignore[arg-type]
        fsync_interval=s.number("fsync_interval", d.fsync_interval, maximum=DAY),
        store_bodies=s.choice(
            "store_bodies",
            d.store_bodies,  # type: ignore[arg-type]
            ("anomalous", "always", "never"),
        ),
        prefix=prefix,
        max_total_bytes=_optional_positive(s, "max_total_bytes", int, 1 << 50),
        max_age_days=_optional_positive(s, "max_age_days", (int, float), 100 * 365),
    )


def _optional_positive(s: _Section, key: str, kind: type | tuple[type, ...],
                       maximum: float) -> Any:
    """An optional limit: absent or 0 means off, otherwise it must be positive."""
    value = s.get(key, kind, None)
    if value is None or value == 0:
        return None
    if not math.isfinite(value):
        raise s.fail(key, f"must be a finite number, got {value}")
    if value < 0:
        raise s.fail(key, f"must be > 0 (or 0 for off), got {value}")
    if value > maximum:
        raise s.fail(key, f"must be <= {maximum:g}, got {value}")
    return value


def _parse_targets(s: _Section, base: Path | None) -> TargetConfig:
    files = tuple(_resolve_path(base, f) for f in s.strings("files", ()))
    return TargetConfig(urls=s.strings("urls", ()), files=files)


def _parse_analysis(s: _Section, base: Path | None) -> AnalysisConfig:
    d = AnalysisConfig()
    files = tuple(_resolve_path(base, f) for f in s.strings("fingerprint_files", ()))
    for path in files:  # read at start too (verdict.with_local_fingerprints), the same way
        s.read_file("fingerprint_files", path, MAX_FINGERPRINT_BYTES, "fingerprint file")
    return AnalysisConfig(
        not_bogon=_networks(s, "not_bogon"),
        retries=s.integer("retries", d.retries, minimum=0, maximum=100),
        benign_sni=s.string("benign_sni", d.benign_sni),
        throttle_min_seconds=s.number("throttle_min_seconds", d.throttle_min_seconds,
                                      maximum=MAX_TIMEOUT),
        throttle_factor=s.number("throttle_factor", d.throttle_factor, minimum=1.0,
                                 maximum=1e6),
        fingerprint_files=files,
        worker_process=s.get("worker_process", bool, d.worker_process),
        worker_timeout=s.number("worker_timeout", d.worker_timeout, maximum=MAX_TIMEOUT),
    )


MAX_TOKEN_BYTES = 4096
_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # visible ASCII: a header value
_HELPER_KEYS = frozenset({"url", "token", "token_file"})
Fail = Callable[[str, str], ConfigError]  # (key in the table, message) -> the error


def _check_token(fail: Fail, key: str, token: str) -> str:
    if not token or not set(token) <= _TOKEN_CHARS or len(token) > MAX_TOKEN_BYTES:
        raise fail(key, "a token must be 1-4096 visible ASCII characters (no spaces)")
    return token


def _read_token(fail: Fail, path: Path) -> str:
    """A token from a file (a systemd credential, say): bounded, one line, at the edge."""
    try:
        data = read_regular(path, MAX_TOKEN_BYTES + 1, "token file")  # + 1: a final newline
    except LocalFileError as exc:
        raise fail("token_file", str(exc)) from None
    token = data.decode("ascii", errors="replace").strip()
    if not token:
        raise fail("token_file", f"{path}: empty token file")
    return _check_token(fail, "token_file", token)


def _token(fail: Fail, base: Path | None, table: Mapping[str, Any]) -> str | None:
    """``token`` or ``token_file`` (not both) from ``table``; None when neither is set."""
    token, token_file = table.get("token"), table.get("token_file")
    for key, value in (("token", token), ("token_file", token_file)):
        if value is not None and not isinstance(value, str):
            raise fail(key, f"expected a string, got {type(value).__name__}")
    if token is not None and token_file is not None:
        raise fail("token_file", "token or token_file, not both")
    if token_file is not None:
        return _read_token(fail, _resolve_path(base, token_file))
    return None if token is None else _check_token(fail, "token", token)


def _loopback_host(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # "http://[::1/": not a URL a token may go to
        return False
    return is_loopback_host(host)


def _control_helper(fail: Fail, url: Any, token: str | None) -> ControlHelper:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise fail("url", f"expected an http(s) URL, got {url!r}")
    if token is not None and url.startswith("http://") and not _loopback_host(url):
        raise fail("url", f"a token would cross the network in plain http to {url}: "
                          "use https:// (plain http only to a loopback address)")
    return ControlHelper(url=url, token=token)


def _helper_entries(s: _Section, base: Path | None) -> list[ControlHelper]:
    helpers = []
    for index, entry in enumerate(s.get("helpers", list, [])):
        def fail(key: str, message: str, index: int = index) -> ConfigError:
            return s.fail("helpers", f"entry {index} {key}: {message}")

        if not isinstance(entry, dict) or "url" not in entry:
            raise s.fail("helpers", f'entry {index}: expected {{url = "...", token = "..." '
                                    'or token_file = "..."}')
        unknown = sorted(entry.keys() - _HELPER_KEYS)
        if unknown:
            raise s.fail("helpers", f"entry {index}: unknown key {unknown[0]!r}")
        helpers.append(_control_helper(fail, entry["url"], _token(fail, base, entry)))
    return helpers


def _parse_control(s: _Section, base: Path | None) -> ControlConfig:
    """``helpers`` (one token per URL), or the older ``helper_url`` + ``helper_token``:
    a single helper_token is only unambiguous with a single helper_url."""
    helpers = _helper_entries(s, base)
    urls = s.strings("helper_url", ())
    token = s.string("helper_token", None)
    if helpers and (urls or token is not None):
        raise s.fail("helpers", "helpers or helper_url/helper_token, not both")
    if token is not None and len(urls) != 1:
        raise s.fail("helper_token", "helper_token goes with exactly one helper_url; "
                                     "for several, give each its own token in helpers")
    if token is not None:
        token = _check_token(lambda _, message: s.fail("helper_token", message), "", token)
    helpers = helpers or [_control_helper(lambda _, message: s.fail("helper_url", message),
                                          url, token) for url in urls]
    return ControlConfig(helpers=tuple(helpers),
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
    token = _helper_token(s, base)
    cert, key = s.string("tls_cert", None), s.string("tls_key", None)
    if bool(cert) != bool(key):
        raise s.fail("tls_cert", "tls_cert and tls_key go together")
    paths = [_resolve_path(base, p) if p else None for p in (cert, key)]
    _check_server_tls(s, paths[0], paths[1])
    return HelperConfig(
        listen=_host_port(s, "listen", d.listen), token=token,
        tls_cert=paths[0], tls_key=paths[1], allow_nets=_allow_nets(s),
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


def _helper_token(s: _Section, base: Path | None) -> str | None:
    s.used.update(("token", "token_file"))
    return _token(s.fail, base, s.table)


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
    d = HelperConfig()
    allow = bool(s.get("allow_anonymous", bool, d.allow_anonymous))
    listen = _host_port(s, "listen", d.listen)
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
            if path is not None:
                s.read_file("wireguard_peers", path, MAX_KEY_FILE_BYTES, f"{where}: key file")
        peers.append((entry["public_key"], files[0], files[1]))
    return tuple(peers)  # type: ignore[arg-type]


def _check_server_tls(s: _Section, cert: Path | None, key: Path | None) -> None:
    """The helper's certificate and key: regular files, bounded, and a working pair."""
    if cert is None or key is None:
        return
    s.read_file("tls_cert", cert, MAX_CERT_FILE_BYTES, "certificate file")
    s.read_file("tls_key", key, MAX_CERT_FILE_BYTES, "key file")
    try:  # what the helper does at start; the files were just checked to be regular
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise s.fail("tls_cert", f"{cert}, {key}: not a usable certificate and key ({exc})") \
            from None


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
    metrics_listen = _listen_ip(s, "metrics_listen", "127.0.0.1:9108")
    exposure = metrics_exposure(metrics_listen)
    if exposure:
        s.warn("metrics_listen", f"{metrics_listen!r} serves unauthenticated metrics and "
                                 f"/healthz on {exposure}; publish it on loopback only "
                                 f"(as the container docs do) or firewall it")
    return ServiceConfig(
        shutdown_grace=s.number("shutdown_grace", 20.0, maximum=3600.0),
        metrics_listen=metrics_listen,
    )


def metrics_exposure(listen: str) -> str | None:
    """Where an ``ip:port`` listener is reachable beyond this host, or None for loopback."""
    if not listen:
        return None
    host = listen.rpartition(":")[0].strip("[]")
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return None
    return "every address" if address.is_unspecified else f"the non-loopback address {host}"


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
_NEEDS_BASE = {"tls", "output", "targets", "helper", "analysis", "control"}
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
        warnings.extend(section.warnings)
        warnings.extend(section.unknown_keys())
    return LoadedConfig(config=Config(source=source, **parts), warnings=tuple(warnings), raw=data)


def _read_config_text(path: Path) -> str:
    """The file's text, read at most MAX_CONFIG_BYTES + 1 bytes (it may be /dev/zero)."""
    try:
        return read_regular(path, MAX_CONFIG_BYTES, "config").decode("utf-8-sig")
    except MissingFileError:
        raise ConfigError(f"{path}: config file not found") from None
    except LocalFileError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError as exc:
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
