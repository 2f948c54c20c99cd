"""The probe's sections: who measures, DNS, deadlines, limits, schedule, output, targets,
analysis and the service. Each reads its keys with the dataclass's default."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from kzprobe.config.model import (
    DEFAULT_GROUP,
    MAX_PROBE_ID,
    AnalysisConfig,
    DnsConfig,
    Http3Config,
    LimitConfig,
    OutputConfig,
    ProbeConfig,
    Resolver,
    ScheduleConfig,
    ServiceConfig,
    TargetConfig,
    TargetGroup,
    TimeoutConfig,
    valid_probe_id,
)
from kzprobe.config.network import _listen_ip, _networks, metrics_exposure, parse_resolver
from kzprobe.config.section import DAY, MAX_BYTES, MAX_TIMEOUT, _resolve_path, _Section
from kzprobe.errors import ConfigError

MAX_FINGERPRINT_BYTES = 16 * 1024 * 1024  # one local fingerprint CSV
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")  # in records, metrics labels and logs
_GROUP_KEYS = frozenset(f.name for f in fields(TargetGroup))  # what an entry may set


def _parse_probe(s: _Section) -> ProbeConfig:
    d = ProbeConfig()
    asn = s.string("asn", d.asn)
    if not (asn.startswith("AS") and asn[2:].isascii() and asn[2:].isdigit()):
        asn = s.invalid("asn", f"expected 'AS<number>', got {asn!r}", d.asn)
    cc = s.string("cc", d.cc)
    if len(cc) != 2 or not (cc.isascii() and cc.isalpha()):
        cc = s.invalid("cc", f"expected a two-letter country code, got {cc!r}", d.cc)
    public_ip = s.strings("public_ip", d.public_ip)
    for ip in public_ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            public_ip = s.invalid("public_ip", f"not an IP address: {ip!r}", d.public_ip)
            break
    probe_id = s.string("id", None)
    if probe_id is not None and not valid_probe_id(probe_id):
        probe_id = s.invalid("id", f"expected 1-{MAX_PROBE_ID} characters of A-Z a-z 0-9 _ -, "
                                   f"got {probe_id!r}", None)
    return ProbeConfig(cc=cc.upper(), asn=asn,
                       network_name=s.string("network_name", d.network_name),
                       public_ip=public_ip, id=probe_id)


def _parse_dns(s: _Section) -> DnsConfig:
    d = DnsConfig()
    resolvers = tuple(_resolver(s, spec) for spec in s.strings("resolvers", ()))
    if "resolvers" in s.table and not resolvers and not s.failed("resolvers"):
        raise s.fail("resolvers", "at least one resolver is needed")
    return DnsConfig(
        resolvers=resolvers or d.resolvers,
        query_aaaa=s.get("query_aaaa", bool, d.query_aaaa),
        tries=s.integer("tries", d.tries, maximum=10),
    )


def _resolver(s: _Section, spec: str) -> Resolver:
    try:
        return parse_resolver(spec)
    except ValueError:
        raise s.fail("resolvers", f"expected 'system', 'ip', 'ip:port', 'tls://ip:853?sni=NAME' "
                                  f"or 'https://NAME/dns-query[?bootstrap=IP]', got {spec!r}") \
            from None


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
        daily_bytes=_optional_positive(s, "daily_bytes", int, 1 << 50),
    )


def _parse_http3(s: _Section) -> Http3Config:
    d = Http3Config()
    return Http3Config(always=s.get("always", bool, d.always))


def _parse_schedule(s: _Section) -> ScheduleConfig:
    d = ScheduleConfig()
    jitter = s.number("jitter", d.jitter, positive=False)
    if jitter >= 1:
        jitter = s.invalid("jitter", "must be a fraction below 1", d.jitter)
    return ScheduleConfig(interval=s.number("interval", d.interval, maximum=30 * DAY),
                          jitter=jitter)


def _parse_output(s: _Section, base: Path | None) -> OutputConfig:
    d = OutputConfig()
    prefix = s.string("prefix", d.prefix)
    # a file name, also in logs and shell loops: no "/", no control character (NUL, newline)
    if not prefix or "/" in prefix or prefix.startswith(".") or len(prefix) > 64 \
            or not prefix.isprintable():
        prefix = s.invalid("prefix", f"must be a plain file-name prefix (up to 64 printable "
                                     f"characters), got {prefix!r}", d.prefix)
    directory = s.string("dir", str(d.dir))
    if "\x00" in directory:
        directory = s.invalid("dir", f"must be a path, got {directory!r}", str(d.dir))
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
        return s.invalid(key, f"must be a finite number, got {value}", None)
    if value < 0:
        return s.invalid(key, f"must be > 0 (or 0 for off), got {value}", None)
    if value > maximum:
        return s.invalid(key, f"must be <= {maximum:g}, got {value}", None)
    return value


def _parse_targets(s: _Section, base: Path | None) -> TargetConfig:
    files = tuple(_resolve_path(base, f) for f in s.strings("files", ()))
    groups: list[TargetGroup] = []
    for index, table in enumerate(s.get("groups", list, [])):
        if not isinstance(table, dict):
            s.record(s.fail(("groups", index), "expected a [[targets.groups]] table"))
            continue
        group = s.entry(("groups", index), table)
        try:
            groups.append(_parse_group(group, base, taken={g.name for g in groups}))
        except ConfigError as exc:  # this group stops here; the others are still checked
            group.record(exc)
        for error in group.errors:
            s.record(error)
        s.warnings.extend(group.warnings)
        s.warnings.extend(group.unknown_keys(_GROUP_KEYS))
    return TargetConfig(urls=s.strings("urls", ()), files=files, groups=tuple(groups))


def _parse_group(s: _Section, base: Path | None, *, taken: set[str]) -> TargetGroup:
    name = s.get("name", str, None)
    if name is None:
        raise s.fail("name", "every group needs a name")
    if not _GROUP_NAME.fullmatch(name) or name == DEFAULT_GROUP:
        raise s.fail("name", f"expected 1-32 characters of A-Z a-z 0-9 _ - (and not "
                             f"{DEFAULT_GROUP!r}), got {name!r}")
    if name in taken:
        raise s.fail("name", f"group {name!r} is defined twice")
    d = TargetGroup(name=name)
    jitter = s.get("jitter", (int, float), None)
    if jitter is not None and not 0 <= jitter < 1:
        jitter = s.invalid("jitter", "must be a fraction from 0 to below 1", None)
    urls = s.strings("urls", ())
    files = tuple(_resolve_path(base, f) for f in s.strings("files", ()))
    if not urls and not files and not s.failed("urls", "files"):
        raise s.fail("urls", f"group {name!r} has neither urls nor files")
    body_bytes = s.get("body_bytes", int, d.body_bytes)
    if body_bytes is not None and not 1024 <= body_bytes <= 1 << 30:
        raise s.fail("body_bytes", f"must be from 1024 to {1 << 30}, got {body_bytes}")
    return TargetGroup(name=name, interval=s.number("interval", d.interval, maximum=30 * DAY),
                       jitter=None if jitter is None else float(jitter), urls=urls,
                       files=files, body_bytes=body_bytes)


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


def _parse_service(s: _Section) -> ServiceConfig:
    d = ServiceConfig()
    metrics_listen = _listen_ip(s, "metrics_listen", d.metrics_listen)
    exposure = metrics_exposure(metrics_listen)
    if exposure:
        s.warn("metrics_listen", f"{metrics_listen!r} serves unauthenticated metrics and "
                                 f"/healthz on {exposure}; publish it on loopback only "
                                 f"(as the container docs do) or firewall it")
    return ServiceConfig(
        shutdown_grace=s.number("shutdown_grace", d.shutdown_grace, maximum=3600.0),
        metrics_listen=metrics_listen,
    )
