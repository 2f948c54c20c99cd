"""Probe registry: which experiment measures a target, chosen by URL scheme.

Adding a kind of target is one module in this package, one line here and one test
file; the engine, writer and CLI do not change.
"""

from __future__ import annotations

import importlib
from functools import cache

from kzprobe.probes.base import Experiment

REGISTRY: dict[str, str] = {
    "http": "kzprobe.probes.web_connectivity:WebConnectivity",
    "https": "kzprobe.probes.web_connectivity:WebConnectivity",
    "tcp": "kzprobe.probes.endpoint:TcpConnect",
    "tls": "kzprobe.probes.endpoint:TlsHandshake",
    "openvpn+tcp": "kzprobe.probes.openvpn:OpenVpn",
    "openvpn+udp": "kzprobe.probes.openvpn:OpenVpn",
    "wireguard": "kzprobe.probes.wireguard:WireGuard",
    "tor": "kzprobe.probes.tor:Tor",
    "obfs4": "kzprobe.probes.obfs4:Obfs4",
    "stun": "kzprobe.probes.stun:StunReachability",
}


@cache
def experiment_for(scheme: str) -> Experiment:
    """Import (lazily, once) and instantiate the experiment registered for ``scheme``."""
    module_name, _, class_name = REGISTRY[scheme].partition(":")
    experiment: Experiment = getattr(importlib.import_module(module_name), class_name)()
    return experiment
