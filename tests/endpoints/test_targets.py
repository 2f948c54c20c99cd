"""Endpoint URIs in target lists: grammar, validation, and the bundled presets (parsed only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzprobe.measure.registry import ENDPOINT_SCHEMES
from kzprobe.targets import load_targets, parse_target, read_target_file

KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+="


@pytest.mark.parametrize(("uri", "url", "params"), [
    ("tcp://1.2.3.4:443", "tcp://1.2.3.4:443", ()),
    ("TLS://Bücher.example:8443?sni=Bücher.example", "tls://xn--bcher-kva.example:8443"
     "?sni=xn--bcher-kva.example", (("sni", "xn--bcher-kva.example"),)),
    ("openvpn+udp://[2001:db8::1]:1194/", "openvpn+udp://[2001:db8::1]:1194", ()),
    (f"wireguard://vpn.example:51820?public_key={KEY}", f"wireguard://vpn.example:51820"
     f"?public_key={KEY}", (("public_key", KEY),)),
    ("tor://1.2.3.4:9001?fingerprint=" + "ab" * 20, "tor://1.2.3.4:9001?fingerprint="
     + "AB" * 20, (("fingerprint", "AB" * 20),)),
    ("stun://stun.example:3478", "stun://stun.example:3478", ()),
])
def test_endpoint_uris_normalise(uri: str, url: str, params: tuple[tuple[str, str], ...]) -> None:
    """Scheme, host and SNI are normalised (IDNA), fingerprints upper-cased, the port kept."""
    target = parse_target(uri)
    assert target.url == url and target.params == params and target.is_endpoint
    assert target.port > 0 and target.input == uri


@pytest.mark.parametrize(("uri", "reason"), [
    ("tcp://1.2.3.4", "needs a port"),
    ("stun://stun.example", "needs a port"),
    ("tcp://1.2.3.4:0", "needs a port"),
    ("tcp://1.2.3.4:22/path", "scheme://host:port"),
    ("tcp://user@1.2.3.4:22", "scheme://host:port"),
    ("tcp://1.2.3.4:22?sni=x", "unknown parameter 'sni'"),
    ("tls://a.example:443?sni=", "needs a value"),
    ("tls://a.example:443?sni=a&sni=b", "given twice"),
    ("tls://a.example:443?verify=maybe", "bad verify"),
    ("wireguard://a.example:51820", "needs public_key"),
    ("wireguard://a.example:51820?public_key=abc", "bad public_key"),
    ("wireguard://a.example:51820?public_key=AAAA", "32-byte key"),
    (f"wireguard://a.example:1?public_key={KEY}&private_key_file=key", "absolute path"),
    ("tor://1.2.3.4:9001?fingerprint=XYZ", "40 hex digits"),
    ("obfs4://1.2.3.4:443", "needs cert"),
])
def test_bad_endpoint_uris_say_why(uri: str, reason: str) -> None:
    """Missing ports and bad or unknown parameters are a ValueError naming the problem."""
    with pytest.raises(ValueError, match=reason):
        parse_target(uri)


def test_redirects_never_lead_to_endpoints() -> None:
    """A web redirect's Location may not turn a measurement into an endpoint probe."""
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_target("tcp://1.2.3.4:22", origin="redirect")


def test_endpoints_and_urls_share_a_csv(tmp_path: Path) -> None:
    """One Citizen Lab CSV mixes URLs and endpoints; a bad endpoint row is skipped (file:line)."""
    path = tmp_path / "list.csv"
    path.write_text("url,category_code,category_description,date_added,source,notes\n"
                    "https://a.example/,NEWS,News,2024-01-01,x,\n"
                    "openvpn+tcp://1.2.3.4:443,ANON,Anon,2024-01-01,x,\n"
                    "tcp://1.2.3.4,ANON,Anon,2024-01-01,x,\n", encoding="utf-8")
    targets, warnings = load_targets([], [path])
    assert [t.scheme for t in targets] == ["https", "openvpn+tcp"]
    assert targets[1].category_code == "ANON"
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:4:") and "port" in warnings[0]


@pytest.mark.parametrize("name", ["messaging", "circumvention"])
def test_bundled_presets_parse_completely(name: str) -> None:
    """The presets load without a warning (parsed only: nothing here contacts them)."""
    targets, warnings = read_target_file(Path(f"config/targets/{name}.csv"))
    assert warnings == [] and len(targets) >= 10
    assert all(t.is_endpoint and t.category_code in ("COMT", "ANON") for t in targets)


def test_presets_cover_the_services() -> None:
    """Telegram DCs, WhatsApp, Signal, and all nine Tor directory authorities with fingerprints."""
    messaging, _ = read_target_file(Path("config/targets/messaging.csv"))
    circumvention, _ = read_target_file(Path("config/targets/circumvention.csv"))
    hosts = {t.host for t in messaging}
    assert "149.154.167.51" in hosts and "e16.whatsapp.net" in hosts
    assert "chat.signal.org" in hosts
    tor = [t for t in circumvention if t.scheme == "tor"]
    assert len(tor) == 9 and all(t.param("fingerprint") for t in tor)


@given(st.sampled_from(ENDPOINT_SCHEMES), st.text(max_size=60))
def test_endpoint_parsing_never_raises_anything_but_value_error(scheme: str, rest: str) -> None:
    """Arbitrary text after an endpoint scheme parses or raises ValueError, nothing else."""
    try:
        target = parse_target(f"{scheme}://{rest}")
    except ValueError:
        return
    assert target.scheme == scheme and 0 < target.port < 65536
