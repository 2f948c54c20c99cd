"""HTTP/3 scenarios: a site fetched over HTTPS, then over QUIC as its Alt-Svc advertises.

The TCP path decides OONI's keys (the site is accessible over HTTPS in all of them); the
QUIC handshake and the HTTP/3 request decide the ``quic.*`` codes, with the control's own
HTTP/3 (``quic_handshake``, ``http3_request``) as the evidence.
"""

from __future__ import annotations

from typing import Any

from kzprobe.netaddr import join_hostport

from .builders import Record, control_page


def add_h3(rec: Record, ip: str, sni: str, url: str, *, handshake: str | None = None,
           request: str | None = None, port: int = 443) -> Record:
    """A QUIC handshake (and, when it worked, the HTTP/3 GET) as the probe records them."""
    txid = rec._txid()
    tags = ["depth=0", "fetch_body=true", "network=udp"]
    entry = rec.handshake(ip, port, sni, failure=handshake, txid=txid, tags=tuple(tags))
    rec.keys.setdefault("quic_handshakes", []).append({**entry, "network": "udp"})
    if handshake is None:
        ok = request is None
        rec.keys["requests"].append({
            "network": "udp", "address": join_hostport(ip, port), "alpn": "h3",
            "failure": request,
            "request": {"url": url, "method": "GET", "headers": {}, "headers_list": [],
                        "body": "", "body_is_truncated": False, "x_transport": "udp"},
            "response": {"code": 200 if ok else 0, "headers": {}, "headers_list": [],
                         "body": "h3 page" if ok else "", "body_is_truncated": False},
            "t0": 0.3, "t": 0.4, "transaction_id": txid, "tags": tags,
            "x_ttfb": 0.05 if ok else None, "x_body_length": 7 if ok else None,
            "x_body_seconds": 0.01 if ok else None})
    return rec


def control_h3(rec: Record, ip: str, sni: str, *, ok: bool, port: int = 443,
               tried: bool = True) -> Record:
    """The control's HTTP/3 answer (``tried=False``: it did not try, as OONI's helpers)."""
    control: dict[str, Any] = rec.keys["control"]
    failure = None if ok else "generic_timeout_error"
    control["quic_handshake"] = {join_hostport(ip, port): {
        "server_name": sni, "status": ok, "failure": failure}} if tried else {}
    control["http3_request"] = None if not tried else (
        control_page(length=7) if ok else {"body_length": -1, "failure": failure, "title": "",
                                           "headers": {}, "status_code": -1})
    return rec
