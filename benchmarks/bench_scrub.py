"""Scrubbing: microseconds per ~50 KB record, the cost paid once per stored record.

    .venv/bin/python benchmarks/bench_scrub.py [--number 200] [--repeat 7]

The record has the shape of a web_connectivity record with a ~45 KB HTML body full of
URLs, times and CSS (colons everywhere, as real pages have), headers, DNS answers, a
certificate chain and the control's answer; the probe's address appears in the body
and a header. Prints the best of ``--repeat`` runs for an IPv4 public address, and for
an IPv4 plus an IPv6 address (dual stack).
"""

from __future__ import annotations

import argparse
import base64
import os
import timeit
from typing import Any

import orjson

from kzprobe.verdict import scrub

V4, V6 = "198.51.100.23", "2001:db8:85a3::8a2e:370:7334"


def _html() -> str:
    rows = []
    for i in range(300):
        rows.append(
            f'<li class="item-{i}" style="color: #a0b{i % 10}c0; margin: 0 {i}px">'
            f'<a href="https://cdn{i % 7}.news.test/2026/12/07/{i:04d}/story.html?utm=feed">'
            f"Story {i} at 12:{i % 60:02d}:07 deadbeef cafe</a></li>")
    rows.insert(150, f"<p>Your address: {V4}</p>")
    return "<html><head><title>News</title></head><body><ul>" + "\n".join(rows) + "</ul></body>"


def record() -> dict[str, Any]:
    """A ~50 KB web_connectivity-shaped record."""
    headers = {"Date": "Mon, 07 Dec 2026 17:33:42 GMT", "Server": "nginx",
               "Content-Type": "text/html; charset=utf-8", "X-Client": V4,
               "Cache-Control": "max-age=60", "Link": "<https://cdn.news.test/a.css>; rel=preload"}
    cert = {"format": "base64", "data": base64.b64encode(os.urandom(1400)).decode()}
    response = {"code": 200, "headers": headers,
                "headers_list": [[k, v] for k, v in headers.items()],
                "body": _html(), "body_is_truncated": False}
    request = {"network": "tcp", "address": "203.0.113.10:443", "alpn": "h2", "failure": None,
               "request": {"url": "https://news.test/", "method": "GET", "headers": {},
                           "headers_list": [], "body": "", "body_is_truncated": False},
               "response": response, "t0": 0.1, "t": 0.4}
    keys = {
        "queries": [{"hostname": "news.test", "query_type": "A", "engine": "udp",
                     "resolver_address": "192.0.2.53:53", "failure": None,
                     "answers": [{"answer_type": "A", "ipv4": "203.0.113.10", "ttl": 60}],
                     "t0": 0.0, "t": 0.01}],
        "tcp_connect": [{"ip": "203.0.113.10", "port": 443,
                         "status": {"success": True, "failure": None}, "t0": 0.01, "t": 0.05}],
        "tls_handshakes": [{"address": "203.0.113.10:443", "server_name": "news.test",
                            "peer_certificates": [cert, cert], "failure": None}],
        "requests": [request],
        "control": {"x_client_ip": V4, "http_request": {"status_code": 200, "headers": headers,
                                                        "title": "News", "body_length": 44000}},
    }
    return {"input": "https://news.test/", "annotations": {"engine_name": "kzprobe"},
            "test_keys": keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rec = record()
    size = len(orjson.dumps(rec))
    for label, needles in (("IPv4", [V4]), ("IPv4+IPv6", [V4, V6])):
        scrub(rec, needles)  # warm any caches
        best = min(timeit.repeat(lambda n=needles: scrub(rec, n),  # type: ignore[misc]
                                 number=args.number, repeat=args.repeat))
        print(f"{label:10s} {size / 1024:.0f} KB record: {best / args.number * 1e6:.0f} us/record")


if __name__ == "__main__":
    main()
