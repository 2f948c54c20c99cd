"""``dot://`` and ``doh://`` endpoints: does an encrypted resolver answer from here?

``dot://host:853?sni=NAME&name=QUERY`` and ``doh://host:443/path?name=QUERY[&sni=NAME]``
(path ``/dns-query`` when none is given): per address, a TCP connect, a verifying TLS
handshake (``sni`` defaults to the host, as for ``tls://``) and one A query for ``name``
over DoT or DoH (HTTP/2). The endpoint is reachable when the query gets an answer. A
reset, stall or EOF in the handshake is re-tried with the benign SNI, so the verdict
tells a blocked name (``tls.*``) from a blocked address (``tcp.*``) as for ``tls://``.

The record is OONI ``dnscheck``'s shape as well (``lookups`` per address, ``bootstrap``)
next to the endpoint keys every kind shares; the query is in ``queries`` with ``engine``
``dot``/``doh`` and the tags ``x_endpoint_query`` and ``address=IP:PORT``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kzprobe.measure.context import close_transport
from kzprobe.measure.experiments.endpoint import (
    Dialled,
    EndpointExperiment,
    Flow,
    Outcome,
    dial,
    sni_check,
)
from kzprobe.measure.flow import needs_sni_check
from kzprobe.measure.flow import secure as flow_secure
from kzprobe.measure.registry import spec_for
from kzprobe.measure.steps import dnsenc
from kzprobe.measure.steps.dns import DnsAnswer, DnsLookup
from kzprobe.netaddr import join_hostport
from kzprobe.targets import Target

QUERY_TAG = "x_endpoint_query"  # marks the endpoint's own query among the host's lookups
DEFAULT_DOH_PATH = "/dns-query"


class _EncryptedDns(EndpointExperiment):
    """What DoT and DoH share: connect, verified handshake (SNI check), one query."""

    protocol: str  # "dot" or "doh": the engine, the ALPN, the failed_operation's prefix

    def finish(self, target: Target, keys: dict[str, Any]) -> dict[str, Any]:
        keys.update(dnscheck_keys(keys))
        return keys

    def where(self, target: Target) -> dnsenc.DohPath | None:
        return None

    async def probe_address(self, flow: Flow, ip: str) -> Outcome:
        conn = await dial(flow, ip)
        if isinstance(conn, Outcome):
            return conn
        target = flow.target
        context = dnsenc.client_context(flow.ctx.config.tls.ca_file, self.protocol)
        shake, secured = await flow_secure(flow, conn, context=context,
                                           server_name=target.param("sni") or target.host)
        if secured is None:
            if needs_sni_check(shake):
                await sni_check(flow, ip)
            return Outcome(address=conn.address, failure=shake.failure,
                           failed_operation="tls_handshake", t0=conn.connect.t0, t=shake.t)
        try:
            return await self._query(flow, conn, secured)
        finally:
            await close_transport(secured)

    async def _query(self, flow: Flow, conn: Dialled, secured: asyncio.Transport) -> Outcome:
        name = flow.target.param("name") or ""
        where = self.where(flow.target)
        t0 = flow.clock.now()
        answers: tuple[DnsAnswer, ...] = ()
        try:
            async with asyncio.timeout(flow.ctx.config.timeouts.dns):
                failure, answers = await dnsenc.ask(secured, conn.held, name, "A", where)
        except Exception as exc:
            failure = dnsenc.failure_of(exc)
        lookup = DnsLookup(
            hostname=name, query_type="A", engine=self.protocol, failure=failure,
            resolver_address=conn.address if where is None else _url(flow.target, where),
            answers=answers, t0=t0, t=flow.clock.now(), tags=(QUERY_TAG, f"address={conn.address}"))
        flow.queries.append(lookup)
        details = {"address": conn.address, "failure": failure, "t0": t0, "t": lookup.t,
                   "query": name, "addresses": lookup.addresses}
        return Outcome(address=conn.address, failure=failure, details=details,
                       failed_operation=f"{self.protocol}_query" if failure else None,
                       t0=conn.connect.t0, t=lookup.t)


def _url(target: Target, where: dnsenc.DohPath) -> str:
    return f"https://{where.authority}{where.path}"


def dnscheck_keys(keys: dict[str, Any]) -> dict[str, Any]:
    """OONI ``dnscheck``'s keys: ``lookups`` per address (its query, connect, handshake),
    and the host's own resolution as ``bootstrap``."""
    queries = [q for q in keys["queries"] if QUERY_TAG in q.get("tags", ())]
    bootstrap = [q for q in keys["queries"] if QUERY_TAG not in q.get("tags", ())]
    lookups = {}
    for outcome in keys["x_endpoint_results"]:
        address = outcome["address"]
        lookups[address] = {
            "failure": outcome["failure"],
            "queries": [q for q in queries if f"address={address}" in q["tags"]],
            "tcp_connect": [c for c in keys["tcp_connect"]
                            if join_hostport(c["ip"], c["port"]) == address],
            "tls_handshakes": [h for h in keys["tls_handshakes"] if h["address"] == address],
            "network_events": [],
        }
    return {"lookups": lookups,
            "bootstrap": {"failure": keys.get("dns_experiment_failure"), "queries": bootstrap},
            "bootstrap_failure": keys.get("dns_experiment_failure")}


class DotQuery(_EncryptedDns):
    """``dot://``: one query over DNS over TLS (RFC 7858)."""

    test_name = spec_for("dot").test_name  # the registry's, not repeated here
    test_version = spec_for("dot").test_version
    protocol_key = "x_dot"
    protocol = "dot"


class DohQuery(_EncryptedDns):
    """``doh://``: one query over DNS over HTTPS (RFC 8484) on HTTP/2."""

    test_name = spec_for("doh").test_name  # the registry's, not repeated here
    test_version = spec_for("doh").test_version
    protocol_key = "x_doh"
    protocol = "doh"

    def where(self, target: Target) -> dnsenc.DohPath:
        host = target.param("sni") or target.host
        shown = f"[{host}]" if ":" in host else host
        authority = shown if target.port == 443 else f"{shown}:{target.port}"
        path = target.path if target.path != "/" else DEFAULT_DOH_PATH
        return dnsenc.DohPath(authority=authority, path=path)
