"""The ``[helper]`` section: ``kzprobe helper``, the control vantage facing the internet."""

from __future__ import annotations

from pathlib import Path

from kzprobe.config.model import HelperConfig
from kzprobe.config.network import (
    _allow_nets,
    _host_port,
    _networks,
    _optional_ip,
    _ports,
    host_of,
    is_loopback_host,
)
from kzprobe.config.section import _resolve_path, _Section
from kzprobe.config.tls import _check_server_tls
from kzprobe.config.tokens import _token

MAX_KEY_FILE_BYTES = 256  # a WireGuard key file: one base64 line (probes.wireguard reads 256)


def _parse_helper(s: _Section, base: Path | None) -> HelperConfig:
    d = HelperConfig()
    token = _helper_token(s, base)
    cert, key = s.string("tls_cert", None), s.string("tls_key", None)
    if bool(cert) != bool(key) and not s.failed("tls_cert", "tls_key"):
        # name the one given: its partner is what is missing
        raise s.fail("tls_cert" if cert else "tls_key", "tls_cert and tls_key go together")
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
    return s.checked(lambda: _token(s.fail, base, s.table), None)


def _anonymous_ok(s: _Section, token: str | None) -> bool:
    """A helper without a token may listen beyond loopback only when explicitly allowed."""
    d = HelperConfig()
    allow = bool(s.get("allow_anonymous", bool, d.allow_anonymous))
    listen = _host_port(s, "listen", d.listen)
    if not token and not allow and not is_loopback_host(host_of(listen)) \
            and not s.failed("token", "token_file", "allow_anonymous"):
        raise s.fail("listen", f"{listen!r} is not loopback: set a token (or "
                     "allow_anonymous = true for a deliberately open helper)")
    return allow


def _fraction(s: _Section, key: str, default: float) -> float:
    value = s.number(key, default, positive=False)
    if value > 1:
        return s.invalid(key, f"must be between 0 and 1, got {value:g}", default)
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
