"""The experiment registry: the one list of the kinds of target kzprobe measures.

Each kind is an :class:`ExperimentSpec`: its URI schemes and parameters (read by
:mod:`kzprobe.targets`), its experiment class (loaded by the engine and the helper), its
``test_name`` and kind (the dispatch of judging), its transport and protocol step (the
endpoint analysis). Nothing else names a scheme or a test name.

Adding a kind of target is one module in ``kzprobe/measure/experiments/`` (the class),
one :class:`ExperimentSpec` here and one test file; ``tests/rules/test_registry.py``
checks every consumer knows it. This module stays pure (no asyncio, aiohttp): targets and
the analysis worker read it, so the class is named as a ``"module:Class"`` string that
:func:`kzprobe.measure.loader.experiment_for` imports on first use (experiments may read
this module; it never imports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from kzprobe.measure import params as p

Kind = Literal["web", "endpoint"]
Transport = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentSpec:
    """One kind of target: what the parser, the engine and the analysis know of it."""

    schemes: tuple[str, ...]
    test_name: str  # the record's test_name (OONI's where there is one)
    test_version: str
    experiment: str  # "module:Class", imported lazily (keeps this module pure)
    kind: Kind  # web: OONI web_connectivity verdicts; endpoint: reachable/interference
    example_uri: str  # a valid target of this kind (the rule test parses it)
    transport: Transport = "tcp"
    params: Mapping[str, p.Validator] = field(default_factory=dict, hash=False)
    required: tuple[str, ...] = ()  # params that must be given
    protocol_step: str | None = None  # failed_operation of the exchange after the transport
    protocol: str | None = None  # its interference-code family (``stun`` in ``stun.timeout``)
    path: bool = False  # the URI may carry a path (``doh://host:443/dns-query``)

    def __post_init__(self) -> None:
        if not set(self.required) <= set(self.params):
            raise ValueError(f"{self.test_name}: required params not in params")
        if (self.protocol_step is None) != (self.protocol is None):
            raise ValueError(f"{self.test_name}: protocol_step and protocol go together")


_X = "kzprobe.measure.experiments."

SPECS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(schemes=("http", "https"), test_name="web_connectivity", test_version="0.5.28",
                   experiment=_X + "web_connectivity:WebConnectivity", kind="web",
                   example_uri="https://example.org/"),
    ExperimentSpec(schemes=("tcp",), test_name="tcpconnect", test_version="0.1.0",
                   experiment=_X + "endpoint:TcpConnect", kind="endpoint",
                   example_uri="tcp://192.0.2.1:5222"),
    ExperimentSpec(schemes=("tls",), test_name="tlshandshake", test_version="0.1.0",
                   experiment=_X + "endpoint:TlsHandshake", kind="endpoint",
                   params={"sni": p.check_host_param, "verify": p.check_bool},
                   example_uri="tls://192.0.2.1:443?sni=example.org&verify=0"),
    ExperimentSpec(schemes=("openvpn+tcp",), test_name="openvpn", test_version="0.1.0",
                   experiment=_X + "openvpn:OpenVpn", kind="endpoint",
                   protocol_step="openvpn_handshake", protocol="openvpn",
                   example_uri="openvpn+tcp://192.0.2.1:1194"),
    ExperimentSpec(schemes=("openvpn+udp",), test_name="openvpn", test_version="0.1.0",
                   experiment=_X + "openvpn:OpenVpn", kind="endpoint", transport="udp",
                   protocol_step="openvpn_handshake", protocol="openvpn",
                   example_uri="openvpn+udp://192.0.2.1:1194"),
    ExperimentSpec(schemes=("wireguard",), test_name="wireguard", test_version="0.1.0",
                   experiment=_X + "wireguard:WireGuard", kind="endpoint", transport="udp",
                   params={"public_key": p.check_key32, "private_key_file": p.check_abs_path,
                           "psk_file": p.check_abs_path},
                   required=("public_key",),
                   protocol_step="wireguard_handshake", protocol="wireguard",
                   example_uri="wireguard://192.0.2.1:51820"
                               "?public_key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    ExperimentSpec(schemes=("tor",), test_name="tor", test_version="0.1.0",
                   experiment=_X + "tor:Tor", kind="endpoint",
                   params={"fingerprint": p.check_fingerprint, "sni": p.check_host_param},
                   protocol_step="tor_link", protocol="tor",
                   example_uri="tor://192.0.2.1:443"
                               "?fingerprint=E3E42D35F801C9D5AB23584E0025D56FE2B33396"),
    ExperimentSpec(schemes=("obfs4",), test_name="tor", test_version="0.1.0",
                   experiment=_X + "obfs4:Obfs4", kind="endpoint",
                   params={"cert": p.check_obfs4_cert, "iat-mode": p.check_iat_mode},
                   required=("cert",),
                   protocol_step="obfs4_handshake", protocol="obfs4",
                   example_uri="obfs4://192.0.2.1:443?iat-mode=0&cert=AAECAwQFBgcICQoLDA0ODxAR"
                               "EhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMw"),
    ExperimentSpec(schemes=("stun",), test_name="stunreachability", test_version="0.4.0",
                   experiment=_X + "stun:StunReachability", kind="endpoint", transport="udp",
                   protocol_step="stun_binding", protocol="stun",
                   example_uri="stun://192.0.2.1:3478"),
    ExperimentSpec(schemes=("quic",), test_name="quichandshake", test_version="0.1.0",
                   experiment=_X + "quic:QuicHandshake", kind="endpoint", transport="udp",
                   params={"sni": p.check_host_param, "verify": p.check_bool},
                   protocol_step="quic_handshake", protocol="quic",
                   example_uri="quic://192.0.2.1:443?sni=example.org"),
    ExperimentSpec(schemes=("dot",), test_name="dnscheck", test_version="0.1.0",
                   experiment=_X + "encrypted_dns:DotQuery", kind="endpoint",
                   params={"sni": p.check_host_param, "name": p.check_host_param},
                   required=("name",), protocol_step="dot_query", protocol="dot",
                   example_uri="dot://192.0.2.1:853?sni=dns.example.org&name=example.org"),
    ExperimentSpec(schemes=("doh",), test_name="dnscheck", test_version="0.1.0",
                   experiment=_X + "encrypted_dns:DohQuery", kind="endpoint",
                   params={"sni": p.check_host_param, "name": p.check_host_param},
                   required=("name",), protocol_step="doh_query", protocol="doh", path=True,
                   example_uri="doh://dns.example.org:443/dns-query?name=example.org"),
)

_BY_SCHEME: dict[str, ExperimentSpec] = {s: spec for spec in SPECS for s in spec.schemes}
_KIND_OF_TEST: dict[str, Kind] = {spec.test_name: spec.kind for spec in SPECS}

WEB_SCHEMES = tuple(s for spec in SPECS if spec.kind == "web" for s in spec.schemes)
ENDPOINT_SCHEMES = tuple(s for spec in SPECS if spec.kind == "endpoint" for s in spec.schemes)
UDP_SCHEMES = frozenset(s for spec in SPECS if spec.transport == "udp" for s in spec.schemes)
# failed_operation of a protocol exchange -> its interference-code family
PROTOCOL_STEPS: Mapping[str, str] = MappingProxyType(
    {spec.protocol_step: spec.protocol for spec in SPECS
     if spec.protocol_step is not None and spec.protocol is not None})


def find_spec(scheme: str) -> ExperimentSpec | None:
    """The spec registered for a URI scheme (lower case), or None."""
    return _BY_SCHEME.get(scheme)


def spec_for(scheme: str) -> ExperimentSpec:
    """The spec registered for a URI scheme; KeyError for one nobody registered."""
    spec = _BY_SCHEME.get(scheme)
    if spec is None:
        raise KeyError(f"no experiment registered for {scheme!r}")
    return spec


def kind_of(test_name: str) -> Kind | None:
    """``web`` or ``endpoint`` for a registered test_name (how to judge it), or None."""
    return _KIND_OF_TEST.get(test_name)

