"""Blockpage fingerprints: OONI, Censored Planet and Citizen Lab signatures.

Loading (:func:`load_fingerprints`, once, from the bundled ``kzprobe/data/fingerprints``) is
kept apart from matching (:func:`match_http`, :func:`match_dns`), so tests can build tiny
sets with :func:`build_fingerprints`.

Matching rules:

* False-positive signatures are checked first (Censored Planet's rule): a hit means "not a
  blockpage" and the result is None.
* Blockpage signatures are then tried by scope, most specific first (nat, isp, prod, inst,
  then the rest), in source order within a scope; the first hit names the page.
* Patterns read literally (OONI ``contains``, Citizen Lab, and every regex that is only
  literals joined by ``.*``) run as substring searches over the whole body snapshot, in
  linear time; those that are a single literal are all found in one Aho-Corasick pass.
  Other regexes see only the first :data:`REGEX_WINDOW` bytes, which bounds the cost of any
  backtracking a pattern could cause.
* Text patterns with Cyrillic letters are also searched in windows-1251, which Russian and
  Kazakh blockpages are often served in.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import ahocorasick

from kzprobe.verdict.analysis.records import canonical_ip

REGEX_WINDOW = 64 * 1024  # Censored Planet also keeps only 64 KiB of each body
SCOPE_ORDER = ("nat", "isp", "prod", "inst")
CONFIRMING_SCOPES = frozenset({"nat", "isp"})
FALSE_POSITIVE_SCOPES = frozenset({"fp", "injb"})
_CP_SCOPES = {"a": "prod", "b": "nat", "c": "isp", "d": "inst", "e": "unk", "f": "vbw"}
_META = frozenset(".^$*+?{}[]|()\\")
_CC = re.compile(r"\b[A-Za-z]{2}\b")


@dataclass(frozen=True, slots=True)
class Signature:
    """One fingerprint as its source defines it.

    ``location``: ``body``; ``page`` (header lines + blank line + body, Censored Planet);
    ``header`` (any header value); ``header.<name>``; or ``dns``.
    ``kind``: ``contains``, ``full``, ``prefix`` or ``regexp``.
    """

    name: str
    source: str
    scope: str
    location: str
    kind: str
    pattern: str
    expected_countries: frozenset[str] = frozenset()

    @property
    def false_positive(self) -> bool:
        return self.scope in FALSE_POSITIVE_SCOPES


@dataclass(frozen=True, slots=True)
class Match:
    """A matched fingerprint; ``confirmed`` follows OONI (country expected, or nat/isp scope)."""

    name: str
    source: str
    scope: str
    confirmed: bool
    location: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    signature: Signature
    chains: tuple[tuple[bytes, ...], ...] = ()  # literal alternatives, each a .*-joined chain
    regex: re.Pattern[bytes] | None = None
    text_regex: re.Pattern[str] | None = None


# A literal's entry in the automaton: its length in bytes and the signatures it belongs to,
# each as (priority index, True if it may occur anywhere in the page, not only the body).
_Owners = tuple[int, tuple[tuple[int, bool], ...]]


@dataclass(frozen=True, slots=True)
class _Scan:
    """Signatures in priority order. Those that are one literal (or alternatives of one) are
    found together by one Aho-Corasick pass over the response, where ~1,400 substring
    searches of every response cost ~0.4 ms; the rest are tried in order, up to that hit."""

    items: tuple[_Compiled, ...]
    automaton: Any  # ahocorasick.Automaton over the literals (latin-1 text), or None
    always: int  # the first index whose literal is empty (hits everything), else len(items)
    # (index, the one header it reads, a string any hit's header value contains) to match
    others: tuple[tuple[int, str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class FingerprintSet:
    """Compiled signatures, ready to match."""

    false_positives: tuple[_Compiled, ...] = ()
    blockpages: tuple[_Compiled, ...] = ()
    dns: Mapping[str, Signature] = field(default_factory=dict)
    false_positive_scan: _Scan = field(init=False, repr=False, compare=False)
    blockpage_scan: _Scan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "false_positive_scan", _scan(self.false_positives))
        object.__setattr__(self, "blockpage_scan", _scan(self.blockpages))

    def __len__(self) -> int:
        return len(self.false_positives) + len(self.blockpages) + len(self.dns)


# ----------------------------------------------------------------------------- compiling


def literal_chain(pattern: str) -> tuple[str, ...] | None:
    """The literal pieces of a regex that is only literals joined by ``.*``, else None."""
    pieces: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith(".*", i):
            pieces.append("".join(current))
            current, i = [], i + 2
        elif char == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            current.append(pattern[i + 1])
            i += 2
        elif char in _META:
            return None
        else:
            current.append(char)
            i += 1
    pieces.append("".join(current))
    return tuple(piece for piece in pieces if piece) or None


def _encodings(text: str) -> list[bytes]:
    variants = [text.encode("utf-8")]
    if any("\u0400" <= char <= "\u04ff" for char in text):
        try:
            variants.append(text.encode("cp1251"))
        except UnicodeEncodeError:
            pass
    return variants


def _chain_variants(pieces: tuple[str, ...]) -> tuple[tuple[bytes, ...], ...]:
    utf8 = tuple(piece.encode("utf-8") for piece in pieces)
    if all(len(_encodings(piece)) == 1 for piece in pieces):
        return (utf8,)
    try:
        return (utf8, tuple(piece.encode("cp1251") for piece in pieces))
    except UnicodeEncodeError:
        return (utf8,)


def _compile_regex(pattern: str) -> re.Pattern[bytes] | None:
    try:
        return re.compile(pattern.encode("utf-8"), re.DOTALL)
    except (re.error, OverflowError, RecursionError):
        return None


def compile_signature(signature: Signature) -> _Compiled | None:
    """Prepare one HTTP signature for fast matching; None if it cannot be compiled."""
    if signature.location.startswith("header"):
        if signature.kind != "regexp":
            return _Compiled(signature)
        try:
            return _Compiled(signature, text_regex=re.compile(signature.pattern, re.DOTALL))
        except (re.error, OverflowError, RecursionError):
            return None
    if signature.kind in ("contains", "full", "prefix"):
        return _Compiled(signature, chains=_chain_variants((signature.pattern,)))
    pieces = literal_chain(signature.pattern)
    if pieces is not None:
        return _Compiled(signature, chains=_chain_variants(pieces))
    regex = _compile_regex(signature.pattern)
    return None if regex is None else _Compiled(signature, regex=regex)


def _scope_rank(signature: Signature) -> int:
    scope = signature.scope
    return SCOPE_ORDER.index(scope) if scope in SCOPE_ORDER else len(SCOPE_ORDER)


def _dns_key(value: str) -> str:
    return canonical_ip(value) or value.strip().rstrip(".").lower()


def _meaning(signature: Signature) -> tuple[str, str, tuple[str, ...]]:
    """What a signature matches, so one source's copy of another's pattern is not run twice."""
    location = "body" if signature.location == "page" else signature.location
    if signature.kind == "contains":
        return (location, "lit", (signature.pattern,))
    chain = literal_chain(signature.pattern) if signature.kind == "regexp" else None
    if chain is not None:
        return (location, "lit", chain)
    return (location, signature.kind, (signature.pattern,))


def build_fingerprints(signatures: Iterable[Signature]) -> FingerprintSet:
    """Compile signatures (in priority order) into a :class:`FingerprintSet`; duplicates of an
    earlier (location, kind, pattern) are dropped."""
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    false_positives: list[_Compiled] = []
    blockpages: list[_Compiled] = []
    dns: dict[str, Signature] = {}
    for signature in signatures:
        if signature.location == "dns":
            dns.setdefault(_dns_key(signature.pattern), signature)
            continue
        key = _meaning(signature)
        compiled = compile_signature(signature) if key not in seen and signature.pattern else None
        seen.add(key)
        if compiled is not None:
            (false_positives if signature.false_positive else blockpages).append(compiled)
    blockpages.sort(key=lambda item: _scope_rank(item.signature))
    return FingerprintSet(tuple(false_positives), tuple(blockpages), dns)


# ----------------------------------------------------------------------------- matching


def _find_chain(haystack: bytes, chain: tuple[bytes, ...]) -> bool:
    position = 0
    for piece in chain:
        found = haystack.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def _match_bytes(item: _Compiled, data: bytes) -> bool:
    kind = item.signature.kind
    if kind == "full":
        return any(data == chain[0] for chain in item.chains)
    if kind == "prefix":
        return any(data.startswith(chain[0]) for chain in item.chains)
    if item.regex is not None:
        return item.regex.search(data[:REGEX_WINDOW]) is not None
    return any(_find_chain(data, chain) for chain in item.chains)


def _match_header_value(item: _Compiled, value: str) -> bool:
    kind, pattern = item.signature.kind, item.signature.pattern
    if kind == "full":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    if item.text_regex is not None:
        return item.text_regex.search(value[:REGEX_WINDOW]) is not None
    return pattern in value


def _match_headers(item: _Compiled, headers: Mapping[str, str]) -> bool:
    location = item.signature.location
    wanted = location[len("header."):] if location.startswith("header.") else None
    return any(_match_header_value(item, value) for name, value in headers.items()
               if wanted is None or name.lower() == wanted)


def render_page(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The response as Censored Planet's signatures expect it: header lines, blank line, body."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return lines.encode("utf-8", "replace") + b"\r\n" + body


def _hits(item: _Compiled, body: bytes, page: bytes, headers: Mapping[str, str]) -> bool:
    location = item.signature.location
    if location.startswith("header"):
        return _match_headers(item, headers)
    return _match_bytes(item, page if location == "page" else body)


def _literal_pieces(item: _Compiled) -> tuple[bytes, ...] | None:
    """The alternatives of a signature that hits iff one of them occurs in its haystack."""
    signature = item.signature
    if signature.location not in ("body", "page") or signature.kind in ("full", "prefix") \
            or item.regex is not None or not item.chains:
        return None
    if any(len(chain) != 1 for chain in item.chains):
        return None
    return tuple(chain[0] for chain in item.chains)


def _scan(items: tuple[_Compiled, ...]) -> _Scan:
    owners: dict[bytes, list[tuple[int, bool]]] = {}
    others: list[tuple[int, str | None, str | None]] = []
    for index, item in enumerate(items):
        pieces = _literal_pieces(item)
        if pieces is None:
            location = item.signature.location
            others.append((index, location[len("header."):] if location.startswith("header.")
                           else None, _header_needle(item)))
            continue
        on_page = item.signature.location == "page"
        for piece in pieces:
            owners.setdefault(piece, []).append((index, on_page))
    always = min((index for index, _ in owners.pop(b"", [])), default=len(items))
    return _Scan(items, _automaton(owners), always, tuple(others))


def _automaton(owners: Mapping[bytes, list[tuple[int, bool]]]) -> Any:
    """Aho-Corasick over the literals; bytes as latin-1 text, one character per byte."""
    if not owners:
        return None
    automaton = ahocorasick.Automaton()
    for piece, found in owners.items():
        entry: _Owners = (len(piece), tuple(found))
        automaton.add_word(piece.decode("latin-1"), entry)
    automaton.make_automaton()
    return automaton


def _first_literal(scan: _Scan, text: str, body_start: int) -> int:
    """The first index whose literal occurs where it must (the body, or the whole page)."""
    first = scan.always
    if scan.automaton is None:
        return first
    for end, (length, found) in scan.automaton.iter(text):
        in_body = end - length + 1 >= body_start
        for index, on_page in found:
            if index < first and (on_page or in_body):
                first = index
    return first


def _header_needle(item: _Compiled) -> str | None:
    """A string every header value this signature hits contains (its pattern), if it has one.

    Every header kind but ``regexp`` hits only a value that contains the pattern (equals,
    starts with, contains), so one search of all values joined rules most of them out.
    """
    signature = item.signature
    if not signature.location.startswith("header") or item.text_regex is not None:
        return None
    return signature.pattern


@dataclass(frozen=True, slots=True)
class _Response:
    """One response in every form the scans read, made once for both of them."""

    body: bytes
    headers: Mapping[str, str]
    page: bytes  # render_page(body, headers)
    text: str  # the page as latin-1, for the automaton
    names: frozenset[str]  # header names, lower-cased
    values: str  # every header value, joined by newlines

    @classmethod
    def of(cls, body: bytes, headers: Mapping[str, str]) -> _Response:
        page = render_page(body, headers)
        return cls(body, headers, page, page.decode("latin-1"),
                   frozenset(name.lower() for name in headers), "\n".join(headers.values()))


def _first_hit(scan: _Scan, response: _Response) -> _Compiled | None:
    """The first item, in priority order, that hits: what trying them one by one finds."""
    body, page, headers = response.body, response.page, response.headers
    first = _first_literal(scan, response.text, len(page) - len(body))
    for index, header, needle in scan.others:
        if index >= first:
            break
        if header is not None and header not in response.names:
            continue  # reads a header this response does not have: cannot hit
        if needle is not None and needle not in response.values:
            continue  # no header value contains its pattern: cannot hit
        if _hits(scan.items[index], body, page, headers):
            return scan.items[index]
    return scan.items[first] if first < len(scan.items) else None


def to_match(signature: Signature, probe_cc: str) -> Match:
    """A :class:`Match` with OONI's confirmation rule applied for ``probe_cc``."""
    confirmed = probe_cc.upper() in signature.expected_countries \
        or signature.scope in CONFIRMING_SCOPES
    return Match(signature.name, signature.source, signature.scope, confirmed, signature.location)


def match_http(fset: FingerprintSet, body: bytes, headers: Mapping[str, str], *,
               probe_cc: str = "ZZ") -> Match | None:
    """The blockpage this response matches, or None (also when a false positive matches)."""
    response = _Response.of(body, headers)
    if _first_hit(fset.false_positive_scan, response) is not None:
        return None
    item = _first_hit(fset.blockpage_scan, response)
    return None if item is None else to_match(item.signature, probe_cc)


def match_dns(fset: FingerprintSet, answers: Iterable[str], *,
              probe_cc: str = "ZZ") -> Match | None:
    """The first answer (address or CNAME) that is a known blocking answer."""
    for answer in answers:
        signature = fset.dns.get(_dns_key(answer)) if isinstance(answer, str) else None
        if signature is not None:
            return to_match(signature, probe_cc)
    return None


# ----------------------------------------------------------------------------- reading


def _countries(text: str) -> frozenset[str]:
    return frozenset(code.upper() for code in _CC.findall(text or ""))


def read_ooni_csv(text: str) -> list[Signature]:
    """OONI blocking-fingerprints rows (HTTP or DNS CSV)."""
    result = []
    for row in csv.DictReader(io.StringIO(text)):
        location = (row.get("location_found") or "").strip()
        result.append(Signature(
            name=row.get("name") or "", source="ooni", scope=(row.get("scope") or "").strip(),
            location=location, kind=(row.get("pattern_type") or "contains").strip(),
            pattern=row.get("pattern") or "",
            expected_countries=_countries(row.get("expected_countries") or "")))
    return result


def read_censoredplanet(text: str, *, false_positive: bool) -> list[Signature]:
    """Censored Planet JSON-lines signatures (regexes over the stored response)."""
    result = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        name, pattern = str(entry.get("fingerprint", "")), str(entry.get("pattern", ""))
        scope = "fp" if false_positive else _CP_SCOPES.get(name[:1], "unk")
        result.append(Signature(name, "censoredplanet", scope, "page", "regexp", pattern))
    return result


def read_citizenlab_http(text: str) -> list[Signature]:
    """Citizen Lab filtering-annotations HTTP rows (literal, body or any header)."""
    return [Signature(
        name=row.get("name") or "", source="citizenlab", scope=(row.get("scope") or "").strip(),
        location="header" if row.get("location_found") == "header" else "body",
        kind="contains", pattern=row.get("pattern") or "",
        expected_countries=_countries(row.get("expected_countries") or ""))
        for row in csv.DictReader(io.StringIO(text))]


def read_citizenlab_dns(text: str) -> list[Signature]:
    """Citizen Lab filtering-annotations DNS rows (an answer to compare in full)."""
    return [Signature(
        name=row.get("name") or "", source="citizenlab", scope=(row.get("scope") or "").strip(),
        location="dns", kind="full", pattern=(row.get("response") or "").strip(),
        expected_countries=_countries(row.get("expected_countries") or ""))
        for row in csv.DictReader(io.StringIO(text)) if row.get("response")]


_FILES = (
    ("ooni-fingerprints_http.csv", "ooni"),
    ("ooni-fingerprints_dns.csv", "ooni"),
    ("censoredplanet-assets-false_positive_signatures.json", "cp-fp"),
    ("censoredplanet-false_positive_signatures.json", "cp-fp"),
    ("censoredplanet-assets-blockpage_signatures.json", "cp"),
    ("censoredplanet-blockpage_signatures.json", "cp"),
    ("citizenlab-filtering-annotations-http.csv", "cl-http"),
    ("citizenlab-filtering-annotations-dns.csv", "cl-dns"),
)


def _read_file(text: str, kind: str) -> list[Signature]:
    if kind == "ooni":
        return read_ooni_csv(text)
    if kind in ("cp", "cp-fp"):
        return read_censoredplanet(text, false_positive=kind == "cp-fp")
    return read_citizenlab_http(text) if kind == "cl-http" else read_citizenlab_dns(text)


def read_all(directory: Path) -> list[Signature]:
    """Every signature from the bundled files, in source priority order."""
    return [signature for name, kind in _FILES
            for signature in _read_file((directory / name).read_text(encoding="utf-8"), kind)]


def bundled_directory() -> Path:
    """Where the bundled fingerprint files live."""
    return Path(str(resources.files("kzprobe"))) / "data" / "fingerprints"


def load_fingerprints_from(directory: Path) -> FingerprintSet:
    """Read and compile the fingerprint files in ``directory`` (not cached)."""
    return build_fingerprints(read_all(directory))


@cache
def load_fingerprints() -> FingerprintSet:
    """The bundled fingerprints, read and compiled once per process."""
    return load_fingerprints_from(bundled_directory())
