"""What becomes of a measured record: judged, measured again while it looks blocked, the
attempt most agree on chosen, scrubbed of the probe's public IP, bodies dropped.

The analysis itself is pure (``kzprobe.verdict.analysis``, applied by
``kzprobe.verdict.analyzer``, inline or in the worker process); this module decides whether
a blocked-looking result must be measured again (one lost packet is not censorship), and
removes the probe's public IP from the record before it is stored.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from kzprobe.config import Config
from kzprobe.errors import FAILURE_INTERRUPTED
from kzprobe.measure.registry import kind_of
from kzprobe.verdict import verdicts
from kzprobe.verdict.analyzer import (
    Analyzer,
    judge,
    read_local_fingerprints,
    with_signatures,
)
from kzprobe.verdict.locate import Locator
from kzprobe.verdict.outcome import is_interrupted
from kzprobe.verdict.verdicts import Verdict
from kzprobe.verdict.worker import ProcessJudge, WorkerUnavailable, failure_of

log = structlog.get_logger("kzprobe.verdict.pipeline")

MeasureOnce = Callable[[], Awaitable[dict[str, Any]]]
SCRUBBED = "[scrubbed]"
_NOT_SCRUBBED = frozenset({"peer_certificates"})  # certificates are evidence, kept intact


def choose(verdicts: Sequence[Verdict]) -> tuple[int, int]:
    """Index of the attempt whose verdict most attempts share (latest on ties), and how many."""
    counts = Counter(verdicts)
    best = max(counts.values())
    index = max(i for i, v in enumerate(verdicts) if counts[v] == best)
    return index, best


# Every spelling of an IPv6 address has "::", or is written out with 4 groups between 5
# colons: a text without either holds none, and skips the (slower) scan below.
_V6_GATE = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
# A run of IPv6 characters with two colons or more, starting where such a run starts (the
# lookbehind and the possessive quantifiers keep the scan linear on any input); {sigs}: the
# run must also hold one of the needles' signatures (see Needles), so that a page of
# look-alikes costs a regex scan, not a Python call per token.
_V6_CANDIDATE = (r"(?<![0-9A-Fa-f.:])(?=[0-9A-Fa-f.:]*?(?i:{sigs}))"
                 r"[0-9A-Fa-f.]*+:[0-9A-Fa-f.]*+:[0-9A-Fa-f:.]*+")
MAX_LEARNED = 8  # helper-reported addresses remembered (the most recent distinct ones)
MAX_PARSES = 2_000  # candidates parsed per string; past it, signature matches are scrubbed
MAX_SPOTS = 64  # signature hits looked at one by one; more: one regex scan of the string
_MAX_RUN = 64  # an IPv6 spelling is at most 45 characters (51 with an unbracketed port)
_RUN_AHEAD = re.compile(rf"[0-9A-Fa-f.:]{{0,{_MAX_RUN + 1}}}")
_V6_CHARS = frozenset("0123456789abcdefABCDEF.:")


@dataclass(frozen=True, slots=True)
class Needles:
    """The probe's addresses, ready for matching every way they can be written.

    IPv4 addresses are matched as text (also inside ``::ffff:a.b.c.d``); IPv6 addresses,
    and the hex spelling of IPv4-mapped ones, by parsing each IPv6-looking run: case,
    leading zeros and where ``::`` falls do not matter. A run is parsed only if it holds
    all of one needle's signatures: the hex digits of its non-zero groups (lower case),
    which every spelling contains.
    """

    v4_texts: tuple[str, ...]
    v6: frozenset[ipaddress.IPv6Address]
    v4: frozenset[ipaddress.IPv4Address]
    signatures: tuple[tuple[str, ...], ...]
    primaries: tuple[str, ...]  # the longest group of each signature ("": none, scan all)
    candidates: re.Pattern[str]

    def __bool__(self) -> bool:
        return bool(self.v4_texts or self.v6)


def _signature(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, ...]:
    """Substrings of every lower-cased IPv6 spelling of ``address`` (IPv4: mapped, in hex)."""
    value = int(address)
    if isinstance(address, ipaddress.IPv4Address):
        groups, words = ["ffff"], [value >> 16, value & 0xFFFF]
    else:  # the last two groups may be written as a dotted quad: only the first six count
        groups, words = [], [(value >> (16 * (7 - i))) & 0xFFFF for i in range(6)]
    groups += [format(word, "x") for word in words if word]
    return tuple(sorted(set(groups), key=lambda g: (-len(g), g)))


@functools.lru_cache(maxsize=64)
def compile_needles(addresses: tuple[str, ...]) -> Needles:
    """Needles for the given address strings (invalid ones are skipped)."""
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for text in addresses:
        address = _address(text)
        if isinstance(address, ipaddress.IPv4Address):
            v4.add(address)
        elif address is not None:
            v6.add(address)
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [*v4, *v6]
    signatures = tuple(_signature(a) for a in sorted(found, key=str))
    firsts = sorted({sig[0] if sig else "" for sig in signatures})
    pattern = _V6_CANDIDATE.format(sigs="|".join(re.escape(f) for f in firsts))
    return Needles(tuple(sorted(str(a) for a in v4)), frozenset(v6), frozenset(v4),
                   signatures, tuple(firsts), re.compile(pattern))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` names, an IPv4-mapped IPv6 one as plain IPv4."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_probe(text: str, needles: Needles) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return address in needles.v6 or (
        address.ipv4_mapped is not None and address.ipv4_mapped in needles.v4)


class _V6Scrubber:
    """Replaces the IPv6 spellings of the needles in one string (a ``re.sub`` callback).

    Parses are bounded (MAX_PARSES per string): a page crafted with thousands of near
    misses of the probe's address past that has every run bearing a signature scrubbed,
    erring on the side of the probe's privacy, never stalling the loop.
    """

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self.parses = 0
        self.seen: dict[str, str] = {}

    def __call__(self, match: re.Match[str]) -> str:
        return self.check(match.group())

    def check(self, token: str) -> str:
        """``token`` (a whole run of IPv6 characters), or its replacement."""
        low = token.lower()
        if not any(all(part in low for part in sig) for sig in self.needles.signatures):
            return token
        if token not in self.seen:
            self.parses += 1
            self.seen[token] = (self._replace(token) if self.parses <= MAX_PARSES
                                else SCRUBBED + token[len(token.rstrip(".")):])
        return self.seen[token]

    def _replace(self, token: str) -> str:
        for core in dict.fromkeys((token, token.rstrip("."), token.rstrip(".:"))):
            if _is_probe(core, self.needles):
                return SCRUBBED + token[len(core):]
        core = token.rstrip(".")
        head, _, port = core.rpartition(":")  # "addr:port" written without brackets
        if port.isdigit() and _is_probe(head, self.needles):
            return f"{SCRUBBED}:{port}{token[len(core):]}"
        return token


def _scrub_text(text: str, needles: Needles) -> str:
    for needle in needles.v4_texts:
        if needle in text:
            text = text.replace(needle, SCRUBBED)
    if ":" in text and _V6_GATE.search(text) is not None:
        text = _scrub_v6(text, needles)
    return text


def _scrub_v6(text: str, needles: Needles) -> str:
    """Look only at the runs around the needles' signatures (found by a fast ``find``);
    past MAX_SPOTS of them, one regex scan of the whole string (linear, but slower)."""
    spots = _spots(text, needles)
    if spots is None:
        return needles.candidates.sub(_V6Scrubber(needles), text)
    runs = sorted({run for spot in spots if (run := _run_at(text, spot)) is not None})
    scrubber, pieces, last = _V6Scrubber(needles), [], 0
    for start, end in runs:
        token = text[start:end]
        if token.count(":") >= 2:
            pieces += [text[last:start], scrubber.check(token)]
            last = end
    return "".join([*pieces, text[last:]]) if pieces else text


def _spots(text: str, needles: Needles) -> list[int] | None:
    """Where the needles' primary signatures occur (None: too many, or a needle has none)."""
    low, spots = text.lower(), []
    if len(low) != len(text):  # "İ" lowers to two characters: positions would not agree
        return None
    for primary in needles.primaries:
        if not primary:
            return None
        at = low.find(primary)
        while at != -1:
            spots.append(at)
            if len(spots) > MAX_SPOTS:
                return None
            at = low.find(primary, at + 1)
    return spots


def _run_at(text: str, spot: int) -> tuple[int, int] | None:
    """The run of IPv6 characters around ``spot``; None if longer than any spelling."""
    start, floor = spot, max(0, spot - _MAX_RUN - 1)
    while start > floor and text[start - 1] in _V6_CHARS:
        start -= 1
    match = _RUN_AHEAD.match(text, spot)
    end = match.end() if match else spot
    if end - start > _MAX_RUN or (start == floor and start > 0 and text[start - 1] in _V6_CHARS):
        return None
    return start, end


def _scrub_binary(value: Mapping[str, Any], needles: Needles) -> dict[str, Any]:
    try:
        raw = base64.b64decode(value["data"], validate=True)
    except (ValueError, TypeError):
        return dict(value)
    raw = _scrub_text(raw.decode("latin-1"), needles).encode("latin-1")  # byte for byte
    return {"format": "base64", "data": base64.b64encode(raw).decode("ascii")}


def _scrub(value: Any, needles: Needles) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, needles)
    if isinstance(value, list):
        return [_scrub(item, needles) for item in value]
    if isinstance(value, dict):
        if value.get("format") == "base64" and isinstance(value.get("data"), str):
            return _scrub_binary(value, needles)
        return {_scrub_text(key, needles) if isinstance(key, str) else key:
                item if key in _NOT_SCRUBBED else _scrub(item, needles)
                for key, item in value.items()}
    return value


def scrub(value: Any, needles: Sequence[str] | Needles) -> Any:
    """Replace every occurrence of the probe's public IP(s), as OONI's scrubber does."""
    if not isinstance(needles, Needles):
        needles = compile_needles(tuple(needles))
    return _scrub(value, needles) if needles else value


def _public(text: str) -> bool:
    """Loopback and unspecified addresses are never a public IP (and scrubbing them would
    erase the addresses of local test servers)."""
    address = _address(text)
    return address is not None and not (address.is_loopback or address.is_unspecified)


def _reported(test_keys: Mapping[str, Any]) -> str | None:
    control = test_keys.get("control")
    if isinstance(control, Mapping) and isinstance(control.get("x_client_ip"), str):
        return str(control["x_client_ip"])
    return None


def public_ips(config: Config, test_keys: Mapping[str, Any]) -> list[str]:
    """The probe's public addresses: configured, and as seen by a kzprobe helper."""
    reported = _reported(test_keys)
    found = [*config.probe.public_ip, *([reported] if reported else [])]
    keep: list[str] = []
    for ip in found:
        if _public(ip) and ip not in keep:
            keep.append(ip)
    return keep


class Scrubber:
    """The probe's known addresses, and the scrubbing of records with all of them.

    Configured addresses always count. Without them, the address is what kzprobe helpers
    report (``x_client_ip``): remembered across records (the last MAX_LEARNED distinct
    ones), so a record whose control failed is scrubbed too. Owned by the pipeline, whose
    loop runs every scrub (the analysis worker never sees a stored record).
    """

    def __init__(self, config: Config) -> None:
        self._configured = tuple(ip for ip in config.probe.public_ip if _public(ip))
        self._learned: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def known(self) -> bool:
        """Whether any public address is known (configured or learned)."""
        return bool(self._configured or self._learned)

    def learn(self, test_keys: Mapping[str, Any]) -> None:
        """Remember the address a helper reported for this measurement, if any."""
        reported = _reported(test_keys)
        address = _address(reported) if reported is not None else None
        if address is not None and _public(str(address)):
            self._remember(str(address))

    def adopt(self, other: Scrubber) -> None:
        """Carry over what ``other`` learned (a reload replaces the pipeline)."""
        for key in other._learned:
            self._remember(key)

    def _remember(self, key: str) -> None:
        """``key`` as the newest learned address; the oldest go past MAX_LEARNED."""
        self._learned[key] = None
        self._learned.move_to_end(key)
        while len(self._learned) > MAX_LEARNED:
            self._learned.popitem(last=False)

    def scrub(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` without any known address of the probe (certificates excepted)."""
        clean: dict[str, Any] = scrub(record, (*self._configured, *self._learned))
        return clean


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping) and isinstance(body.get("data"), str):
        try:
            return base64.b64decode(body["data"])
        except ValueError:
            return b""
    return b""


def drop_bodies(test_keys: Mapping[str, Any]) -> None:
    """Replace response bodies by their length and SHA-256 (``output.store_bodies``)."""
    for request in test_keys.get("requests") or []:
        response = request.get("response") if isinstance(request, dict) else None
        if not isinstance(response, dict) or not response.get("body"):
            continue
        raw = _body_bytes(response["body"])
        response["body"] = ""
        response["x_body_sha256"] = hashlib.sha256(raw).hexdigest()
        response["x_body_length"] = len(raw)


class Pipeline:
    """The verdict side of a measurement, apart from the measuring resources.

    Owns the analyzer (its fingerprints are built here, so bad fingerprint files fail at
    start), the scrubber and the analysis worker. The engine hands :meth:`run` a way to
    measure the target once; everything after the observations happens here.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.scrubber = Scrubber(config)
        self.locator = Locator(config)  # [geoip]: ASNs in records, the probe's own network
        self.judge = (ProcessJudge(config, timeout=config.analysis.worker_timeout)
                      if config.analysis.worker_process else None)
        # Judging in the worker, this process builds the fingerprints (~0.1 s) only if it
        # falls back to judging inline; the local files are checked now all the same.
        # (read now, kept: a file gone by the time of a fallback must not matter).
        self._analyzer = None if self.judge is not None else Analyzer(config)
        files = config.analysis.fingerprint_files
        self._local = read_local_fingerprints(files) if self._analyzer is None and files else None

    @property
    def analyzer(self) -> Analyzer:
        if self._analyzer is None:
            local = self._local
            self._analyzer = Analyzer(self.config, None if local is None
                                      else with_signatures(local))
        return self._analyzer

    async def run(self, url: str, measure_once: MeasureOnce) -> dict[str, Any]:
        """Measure (again, while it looks blocked); the chosen record, scrubbed."""
        attempts: list[tuple[dict[str, Any], Verdict]] = []
        for _ in range(1 + self.config.analysis.retries):
            record = await measure_once()
            self.locator.annotate(record)
            verdict = await self.verdict(record, url)
            attempts.append((record, verdict))
            self.scrubber.learn(record["test_keys"])
            if not verdict.looks_blocked() or is_interrupted(record):
                break
        return self.finish(attempts)

    def finish(self, attempts: Sequence[tuple[dict[str, Any], Verdict]]) -> dict[str, Any]:
        """The attempt most agree on, with the attempts noted, scrubbed, bodies per policy."""
        index, agreeing = choose([verdict for _, verdict in attempts])
        record, verdict = attempts[index]
        keys = record["test_keys"]
        keys["x_attempts"] = len(attempts)
        keys["x_attempts_agreeing"] = agreeing
        keys["x_attempt_verdicts"] = [v.as_attempt() for _, v in attempts]
        record = self.scrubber.scrub(record)
        if not verdict.keep_bodies(self.config.output.store_bodies):
            drop_bodies(record["test_keys"])  # after scrubbing: the hash hides the address too
        return record

    async def verdict(self, record: dict[str, Any], url: str) -> Verdict:
        """Judge ``record`` (its keys filled in place); failures of analysis are data."""
        test_name = record.get("test_name")
        if (is_interrupted(record) or not isinstance(test_name, str)
                or kind_of(test_name) is None):
            return verdicts.unjudged(test_name if isinstance(test_name, str) else None)
        try:
            if self.judge is None or not self.judge.usable:
                return judge(self.analyzer, test_name, record["test_keys"], url)
            record["test_keys"], verdict = await self.judge.judge(
                test_name, record["test_keys"], url)
            return verdict
        except WorkerUnavailable as exc:  # a crash loop: judge here from now on
            log.error("analysis_worker_failed", error=str(exc), fallback="inline")
            return await self.verdict(record, url)
        except asyncio.CancelledError:  # shutdown past its grace: the record still goes out
            record["test_keys"]["x_analysis_failure"] = FAILURE_INTERRUPTED
        except Exception as exc:  # a bug in analysis must not lose the observations
            log.warning("analysis_crashed", error=repr(exc)[:200])
            log.debug("analysis_crashed_target", url=url)
            record["test_keys"]["x_analysis_failure"] = failure_of(exc)
        return verdicts.unjudged(test_name)

    @property
    def judging_in_worker(self) -> bool:
        """Whether verdicts come from the analysis worker (else from this loop)."""
        return self.judge is not None and self.judge.usable

    async def start(self) -> None:
        """Start the analysis worker before the first measurement needs it.

        A worker that cannot start is logged and judging falls back to this loop: a
        verdict computed here beats a record without one.
        """
        if self.judge is None:
            return
        try:
            await self.judge.start(wait=False)  # measuring starts while it builds
        except Exception as exc:
            log.error("analysis_worker_failed", error=repr(exc)[:200], fallback="inline")
            await self.judge.aclose()
            self.judge = None

    async def aclose(self) -> None:
        self.locator.close()
        if self.judge is not None:
            await self.judge.aclose()
