"""The resolve step, one behaviour for every experiment and for the helper.

Every configured resolver is asked (``system`` through getaddrinfo; the others A, plus
AAAA when ``dns.query_aaaa`` is on), so a resolver that lies or fails is seen next to
one that answers. OONI LTE tags the lookup a browser would use ``classic``: ours is the
first resolver's getaddrinfo or its A query (a v4-only name's empty AAAA answer is no
failure of the name).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kzprobe import failures
from kzprobe.measure.context import ProbeContext, Stopwatch
from kzprobe.measure.steps import dns


@dataclass(frozen=True, slots=True)
class Resolution:
    """Every lookup made, the addresses found (first seen first), and the failure when
    there were none (the first failing lookup's, else ``dns_no_answer``)."""

    lookups: tuple[dns.DnsLookup, ...]
    addresses: list[str]
    failure: str | None


async def resolve(host: str, ctx: ProbeContext, clock: Stopwatch, *,
                  depth: int = 0) -> Resolution:
    """Ask every configured resolver for ``host`` (a name, not an IP literal)."""
    cfg = ctx.config
    depth_tag = f"depth={depth}"
    jobs = []
    for index, resolver in enumerate(cfg.dns.resolvers):
        if resolver.is_system:
            tags = (depth_tag, "classic") if index == 0 else (depth_tag,)
            jobs.append(dns.lookup_system(host, timeout=cfg.timeouts.dns, clock=clock, tags=tags))
            continue
        for qtype in ("A", "AAAA") if cfg.dns.query_aaaa else ("A",):
            classic = index == 0 and qtype == "A"
            tags = (depth_tag, "classic") if classic else (depth_tag,)
            jobs.append(dns.lookup_udp(host, qtype, resolver, timeout=cfg.timeouts.dns,
                                       tries=cfg.dns.tries, clock=clock, tags=tags,
                                       channels=ctx.dns_channels))
    lookups = tuple(await asyncio.gather(*jobs))
    addresses = list(dict.fromkeys(a for lookup in lookups for a in lookup.addresses))
    if addresses:
        return Resolution(lookups, addresses, None)
    failure = next((lk.failure for lk in lookups if lk.failure), failures.DNS_NO_ANSWER)
    return Resolution(lookups, [], failure)
