"""Scrubbing: microseconds per record, the cost paid once per stored record on the loop.

    .venv/bin/python benchmarks/bench_scrub.py [--number 200] [--repeat 5]
    git show 6d6c6c4:kzprobe/verdict/pipeline.py > /tmp/old_verdict.py
    .venv/bin/python benchmarks/bench_scrub.py --baseline /tmp/old_verdict.py

Records have the shape of a web_connectivity record: an HTML body full of URLs, times and
CSS (1,500 colons in the large one, as real pages have), headers, DNS answers, a
certificate chain and the control's answer; the probe's address appears in the body and
a header. Sizes: ~58 KB (a ~45 KB body) and ~8 KB (a 2.5 KB body), and the large one with
``a::before`` in its CSS (which looks like IPv6). Prints the best of ``--repeat`` runs for
an IPv4 public address and for IPv4 plus IPv6 (dual stack); with ``--baseline``, the same
for another ``verdict.py`` (e.g. before a change), alternating, and the ratio.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import importlib.util
import os
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from kzprobe.verdict import pipeline as verdict

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
    """A ~58 KB web_connectivity-shaped record."""
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


def _variants() -> dict[str, dict[str, Any]]:
    large = record()
    small = copy.deepcopy(large)
    body = small["test_keys"]["requests"][0]["response"]
    body["body"] = body["body"][:2500]
    css = copy.deepcopy(large)
    page = css["test_keys"]["requests"][0]["response"]
    page["body"] = "<style>a::before{content:''} p::after{color:red}</style>" + page["body"]
    return {f"{len(orjson.dumps(r)) / 1024:.0f} KB{label}": r
            for label, r in (("", large), ("", small), (" a::before", css))}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_verdict", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another verdict.py to compare with")
    args = parser.parse_args()
    sides: dict[str, ModuleType] = {"now": verdict}
    if args.baseline:
        sides = {"baseline": _load(args.baseline), **sides}
    for name, rec in _variants().items():
        for label, needles in (("IPv4", [V4]), ("IPv4+IPv6", [V4, V6])):
            best = dict.fromkeys(sides, float("inf"))
            for _ in range(args.repeat):  # the sides alternate: load changes hit both
                for side, module in sides.items():
                    seconds = timeit.timeit(functools.partial(module.scrub, rec, needles),
                                            number=args.number)
                    best[side] = min(best[side], seconds / args.number)
            line = "  ".join(f"{side} {t * 1e6:6.1f} us" for side, t in best.items())
            ratio = f"  {best['now'] / best['baseline']:.2f}x" if "baseline" in best else ""
            print(f"{name:16s} {label:10s} {line}{ratio}")


if __name__ == "__main__":
    main()
