"""Builders for recorded observations in kzprobe's record format (docs/record-format.md).

Each builder call appends events exactly as the probe writes them, so the analysis tests read
the same shapes as production records. No network is involved anywhere.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from kzprobe.netaddr import join_hostport

Json = dict[str, Any]


def _answer(addr: str) -> Json:
    if ":" in addr:
        return {"answer_type": "AAAA", "ipv6": addr, "ttl": 60}
    return {"answer_type": "A", "ipv4": addr, "ttl": 60}


def b64(der: bytes) -> Json:
    """A peer certificate entry."""
    return {"format": "base64", "data": base64.b64encode(der).decode()}


@dataclass
class Record:
    """Accumulates test_keys for one measured URL."""

    url: str
    keys: Json = field(default_factory=lambda: {
        "queries": [], "tcp_connect": [], "tls_handshakes": [], "requests": [],
        "x_sni_checks": [], "control": None, "control_failure": None,
        "dns_experiment_failure": None, "http_experiment_failure": None,
    })
    next_txid: int = 1

    def _txid(self) -> int:
        self.next_txid += 1
        return self.next_txid - 1

    @staticmethod
    def _tags(depth: int, *extra: str) -> list[str]:
        return ["classic", f"depth={depth}", *extra]

    def dns(self, host: str, addrs: tuple[str, ...] = (), *, failure: str | None = None,
            engine: str = "udp", query_type: str = "A", depth: int = 0, classic: bool = True,
            resolver: str = "127.0.0.1:5353", t0: float = 0.0, t: float = 0.01) -> Record:
        """One DNS lookup (tagged ``classic`` as the probe does for its first resolver)."""
        tags = self._tags(depth) if classic else [f"depth={depth}"]
        self.keys["queries"].append({
            "hostname": host, "query_type": query_type, "engine": engine,
            "resolver_address": resolver if engine != "getaddrinfo" else "",
            "failure": failure, "answers": [_answer(a) for a in addrs],
            "rcode": 0, "t0": t0, "t": t, "transaction_id": self._txid(), "tags": tags,
        })
        return self

    def tcp(self, ip: str, port: int, *, failure: str | None = None, depth: int = 0,
            t0: float = 0.02, t: float = 0.03) -> int:
        """A TCP connect; returns the flow's transaction id."""
        txid = self._txid()
        self.keys["tcp_connect"].append({
            "ip": ip, "port": port, "t0": t0, "t": t, "transaction_id": txid,
            "status": {"success": failure is None, "failure": failure, "blocked": None},
            "tags": self._tags(depth, "fetch_body=true"),
        })
        return txid

    @staticmethod
    def handshake(ip: str, port: int, sni: str, *, failure: str | None = None,
                  certs: tuple[bytes, ...] = (), t0: float = 0.03, t: float = 0.05,
                  txid: int = 0, tags: tuple[str, ...] = ()) -> Json:
        """A df-006 handshake entry."""
        return {
            "network": "tcp", "address": join_hostport(ip, port), "server_name": sni,
            "failure": failure, "peer_certificates": [b64(c) for c in certs],
            "tls_version": "TLSv1.3" if failure is None else "", "cipher_suite": "",
            "negotiated_protocol": "", "no_tls_verify": False, "t0": t0, "t": t,
            "transaction_id": txid, "tags": list(tags),
        }

    def tls(self, txid: int, ip: str, port: int, sni: str, *, depth: int = 0, **kw: Any) -> Record:
        """A TLS handshake on flow ``txid``."""
        tags = tuple(self._tags(depth, "fetch_body=true"))
        entry = self.handshake(ip, port, sni, txid=txid, tags=tags, **kw)
        self.keys["tls_handshakes"].append(entry)
        return self

    def sni_check(self, ip: str, port: int, *, sni: str = "example.com", **kw: Any) -> Record:
        """A benign-SNI handshake repeated to the same address (``x_sni_checks``)."""
        self.keys["x_sni_checks"].append(
            self.handshake(ip, port, sni, txid=self._txid(), tags=("sni=benign",), **kw))
        return self

    def http(self, txid: int, url: str, ip: str, port: int, *, code: int = 200,
             body: str | bytes = "", headers: Json | None = None, failure: str | None = None,
             depth: int = 0, truncated: bool = False, ttfb: float = 0.05,
             body_seconds: float = 0.01) -> Record:
        """An HTTP round trip; requests[] is kept newest first."""
        headers = headers or {}
        if isinstance(body, bytes):
            try:
                body_json: Any = body.decode("utf-8")
            except UnicodeDecodeError:
                body_json = {"format": "base64", "data": base64.b64encode(body).decode()}
        else:
            body_json = body
        response = None if failure else {
            "code": code, "headers": headers, "headers_list": [[k, v] for k, v in headers.items()],
            "body": body_json, "body_is_truncated": truncated,
        }
        self.keys["requests"].insert(0, {
            "network": "tcp", "address": join_hostport(ip, port), "alpn": "", "failure": failure,
            "request": {"url": url, "method": "GET", "headers": {}, "headers_list": [],
                        "body": "", "body_is_truncated": False, "x_transport": "tcp"},
            "response": response or {"code": 0, "headers": {}, "headers_list": [], "body": "",
                                     "body_is_truncated": False},
            "t0": 0.1, "t": 0.2, "transaction_id": txid,
            "tags": self._tags(depth, "fetch_body=true"),
            "x_ttfb": ttfb, "x_body_length": len(body_json) if isinstance(body_json, str) else 0,
            "x_body_seconds": body_seconds,
        })
        if depth == 0 or failure is not None:
            self.keys["http_experiment_failure"] = failure
        return self

    def control(self, *, addrs: tuple[str, ...] = (), dns_failure: str | None = None,
                tcp: dict[str, bool] | None = None, tls: dict[str, bool] | None = None,
                sni: str = "", http: Json | None = None) -> Record:
        """The helper's THResponse; ``tcp``/``tls`` map ``ip:port`` to success."""
        def status(ok: bool, kind: str) -> Json:
            return {"status": ok, "failure": None if ok else kind}

        http = http if http is not None else {
            "body_length": -1, "failure": "unknown_error", "title": "", "headers": {},
            "status_code": -1}
        self.keys["control"] = {
            "tcp_connect": {k: status(v, "connection_refused_error")
                            for k, v in (tcp or {}).items()},
            "tls_handshake": {k: {"server_name": sni, **status(v, "generic_timeout_error")}
                              for k, v in (tls or {}).items()},
            "http_request": http,
            "dns": {"failure": dns_failure, "addrs": list(addrs)},
            "ip_info": {},
        }
        return self

    def control_failed(self, failure: str = "generic_timeout_error") -> Record:
        """No usable control response."""
        self.keys["control"] = None
        self.keys["control_failure"] = failure
        return self


def control_page(*, code: int = 200, length: int = 1000, title: str = "",
                 headers: Json | None = None) -> Json:
    """A successful control http_request."""
    return {"body_length": length, "failure": None, "title": title,
            "headers": headers or {}, "status_code": code}
