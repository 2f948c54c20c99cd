"""Probe registry: which experiment measures a target, chosen by URL scheme.

Adding a kind of target is one module in this package, one line here and one test
file; the engine, writer and CLI do not change.
"""

from __future__ import annotations

import importlib
from functools import cache

from kzprobe.measure.context import Experiment

REGISTRY: dict[str, str] = {
    "http": "kzprobe.measure.experiments.web_connectivity:WebConnectivity",
    "https": "kzprobe.measure.experiments.web_connectivity:WebConnectivity",
    "tcp": "kzprobe.measure.experiments.endpoint:TcpConnect",
    "tls": "kzprobe.measure.experiments.endpoint:TlsHandshake",
    "openvpn+tcp": "kzprobe.measure.experiments.openvpn:OpenVpn",
    "openvpn+udp": "kzprobe.measure.experiments.openvpn:OpenVpn",
    "wireguard": "kzprobe.measure.experiments.wireguard:WireGuard",
    "tor": "kzprobe.measure.experiments.tor:Tor",
    "obfs4": "kzprobe.measure.experiments.obfs4:Obfs4",
    "stun": "kzprobe.measure.experiments.stun:StunReachability",
}


@cache
def experiment_for(scheme: str) -> Experiment:
    """Import (lazily, once) and instantiate the experiment registered for ``scheme``."""
    module_name, _, class_name = REGISTRY[scheme].partition(":")
    experiment: Experiment = getattr(importlib.import_module(module_name), class_name)()
    return experiment
