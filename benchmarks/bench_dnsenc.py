"""Overhead of an encrypted lookup over a plain one, on loopback against Debian's unbound.

Each lookup is what ``[dns] resolvers`` does for one name: plain UDP (a fresh c-ares
channel), DoT and DoH (a fresh TCP+TLS connection each, HTTP/2 for DoH). The sides
alternate, ``--rounds`` pairs; the median of each and the ratios are printed. One line of
summary at the end. Needs ``unbound`` (apt-get install unbound); traffic stays on 127.0.0.1.

    .venv/bin/python benchmarks/bench_dnsenc.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kzprobe.config import parse_resolver
from kzprobe.measure.clock import Stopwatch
from kzprobe.measure.steps import dns, dnsenc
from tests.dnsenc import servers


async def _run(rounds: int, ca_file: Path, running: servers.Unbound) -> dict[str, list[float]]:
    plain = parse_resolver(f"127.0.0.1:{running.udp_port}")
    dot = parse_resolver(f"tls://127.0.0.1:{running.dot_port}?sni={servers.NAME}")
    doh = parse_resolver(f"https://{servers.NAME}:{running.doh_port}/dns-query"
                         "?bootstrap=127.0.0.1")
    times: dict[str, list[float]] = {"udp": [], "dot": [], "doh": []}
    for _ in range(rounds):
        for name, resolver in (("udp", plain), ("dot", dot), ("doh", doh)):
            start = time.perf_counter()
            if name == "udp":
                found = await dns.lookup_udp("site.test", "A", resolver, timeout=2.0, tries=1,
                                             clock=Stopwatch())
            else:
                found = await dnsenc.lookup_encrypted("site.test", "A", resolver, timeout=2.0,
                                                      clock=Stopwatch(), ca_file=ca_file)
            times[name].append(time.perf_counter() - start)
            assert found.failure is None, found
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if servers.UNBOUND is None:
        sys.exit("unbound is not installed (apt-get install unbound)")
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        with servers.unbound(Path(tmp), ca) as running:
            times = asyncio.run(_run(args.rounds, ca_file, running))
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, ms in medians.items():
        print(f"{name}: median {ms:.2f} ms per lookup ({args.rounds} lookups)")
    print(f"summary: DoT {medians['dot'] / medians['udp']:.1f}x, DoH "
          f"{medians['doh'] / medians['udp']:.1f}x the time of a plain UDP lookup "
          f"(udp {medians['udp']:.2f} ms, dot {medians['dot']:.2f} ms, "
          f"doh {medians['doh']:.2f} ms; median of {args.rounds})")


if __name__ == "__main__":
    main()
