"""``quic://host:443?sni=NAME``: a bare QUIC handshake (OONI urlgetter's ``quichandshake``).

One handshake per address with ALPN ``h3``, SNI ``sni`` (default: the host) and the
certificate verified unless ``verify=0``; recorded in ``quic_handshakes`` (df-006 with
``network: "udp"``). Reachable when the handshake completes. The control helper runs the
same URI from outside; the codes are web_connectivity's ``quic.*`` (README, "Endpoint
targets").
"""

from __future__ import annotations

from kzprobe.measure.experiments.endpoint import EndpointExperiment, Flow, Outcome
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import quic


class QuicHandshake(EndpointExperiment):
    """A QUIC handshake to each address of the endpoint."""

    test_name = spec_for("quic").test_name  # the registry's, not repeated here
    test_version = spec_for("quic").test_version
    protocol_key = "quic_handshakes"

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        target, cfg = flow.target, flow.ctx.config
        shake, _ = await quic.exchange(
            ip, target.port, server_name=target.param("sni") or target.host, clock=flow.clock,
            timeout=cfg.timeouts.tls, ca_file=cfg.tls.ca_file,
            verify=target.param("verify") not in ("0", "false"),
            max_chain_bytes=cfg.tls.max_chain_bytes, source=flow.ctx.source_address,
            transaction_id=flow.transaction_id())
        return Outcome(address=shake.address, failure=shake.failure,
                       failed_operation="quic_handshake" if shake.failure else None,
                       details=shake.archival(), t0=shake.t0, t=shake.t)
