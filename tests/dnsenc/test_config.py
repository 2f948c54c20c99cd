"""``[dns] resolvers`` accepts DoT (``tls://``) and DoH (``https://``) resolvers."""

from __future__ import annotations

import pytest

from kzprobe.config import ConfigError, parse_config, parse_resolver


def test_dot_forms() -> None:
    dot = parse_resolver("tls://192.0.2.1?sni=Dns.Example")
    assert (dot.protocol, dot.address, dot.port, dot.server_name) == (
        "dot", "192.0.2.1", 853, "dns.example")
    assert dot.resolver_address == "192.0.2.1:853" and dot.is_encrypted
    v6 = parse_resolver("tls://[2001:db8::1]:8853")
    assert (v6.address, v6.port, v6.server_name) == ("2001:db8::1", 8853, "2001:db8::1")


def test_doh_forms() -> None:
    doh = parse_resolver("https://dns.example/dns-query?bootstrap=192.0.2.2")
    assert (doh.protocol, doh.address, doh.port, doh.server_name, doh.url) == (
        "doh", "192.0.2.2", 443, "dns.example", "https://dns.example/dns-query")
    assert doh.resolver_address == "https://dns.example/dns-query"
    bare = parse_resolver("https://dns.example:8443")
    assert (bare.address, bare.port, bare.url) == ("", 8443, "https://dns.example:8443/dns-query")
    literal = parse_resolver("https://192.0.2.3/q")
    assert literal.address == "192.0.2.3"
    assert not parse_resolver("192.0.2.4").is_encrypted


@pytest.mark.parametrize("spec", [
    "tls://dns.example", "tls://192.0.2.1/path", "tls://192.0.2.1?sni=", "tls://192.0.2.1?x=1",
    "https://dns.example/q?bootstrap=name", "https://dns.example/q?sni=a", "https://:443/",
    "tls://192.0.2.1:99999",
])
def test_bad_forms(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_resolver(spec)


def test_config_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"resolvers.*tls://dns\.example"):
        parse_config({"dns": {"resolvers": ["tls://dns.example"]}})


def test_presets_parse() -> None:
    """config/targets/encrypted-dns.csv: DoT and DoH endpoints, each asking a name (parsed
    only: those are real public servers)."""
    from pathlib import Path

    from kzprobe.targets import read_target_file

    targets, warnings = read_target_file(Path("config/targets/encrypted-dns.csv"))
    assert warnings == [] and len(targets) >= 10
    assert {t.scheme for t in targets} == {"dot", "doh"}
    assert all(t.param("name") for t in targets)
    assert all(t.path == "/dns-query" for t in targets if t.scheme == "doh")
