"""Blockpage fingerprint loading and matching."""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzprobe.verdict.analysis.fingerprints import (
    REGEX_WINDOW,
    FingerprintSet,
    Signature,
    build_fingerprints,
    bundled_directory,
    literal_chain,
    load_fingerprints,
    match_dns,
    match_http,
    read_censoredplanet,
    read_citizenlab_dns,
    read_ooni_csv,
    render_page,
)
from kzprobe.verdict.analysis.fingerprints import _hits as hits

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "fingerprints"


def sig(name: str, pattern: str, *, location: str = "body", kind: str = "contains",
        scope: str = "isp", countries: frozenset[str] = frozenset()) -> Signature:
    return Signature(name, "test", scope, location, kind, pattern, countries)


@pytest.fixture(scope="module")
def bundled() -> FingerprintSet:
    return load_fingerprints()


def test_bundled_files_are_verbatim_copies() -> None:
    """Each bundled data file has the sha256 recorded in SOURCES.md."""
    sources = (bundled_directory() / "SOURCES.md").read_text(encoding="utf-8")
    pairs = re.findall(r"([0-9a-f]{64})  (\S+)", sources)
    recorded = {name: digest for digest, name in pairs}
    files = [p for p in bundled_directory().iterdir() if p.name != "SOURCES.md"]
    assert len(files) == 12 and set(recorded) == {p.name for p in files}
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[path.name], path.name


def test_bundled_set_sizes(bundled: FingerprintSet) -> None:
    """All sources load: hundreds of false positives, >1000 blockpages, >200 DNS answers."""
    assert len(bundled.false_positives) > 400
    assert len(bundled.blockpages) > 1000
    assert len(bundled.dns) > 200
    assert load_fingerprints() is bundled  # cached


def test_real_kz_fingerprints(bundled: FingerprintSet) -> None:
    """The Kazakh-language pattern, windows-1251 pages and neighbour ISPs' headers match."""
    kazakh = "Ресурста ақпараттық қауіпсіздікке төнетін қауіп-қатер бар".encode()
    assert match_http(bundled, kazakh, {}).name == "cp.f_gen_ru_8_satellite"  # type: ignore[union-attr]
    cp1251 = "<p>Страница заблокирована</p>".encode("cp1251")
    assert match_http(bundled, cp1251, {}).name == "cp.d_corp_kz_ps"  # type: ignore[union-attr]
    kg = match_http(bundled, b"", {"Location": "http://homeline.kg/access/blockpage.html"},
                    probe_cc="KZ")
    assert kg is not None and kg.name == "ooni.kg_0" and kg.scope == "isp" and kg.confirmed


def test_confirmation_follows_ooni(bundled: FingerprintSet) -> None:
    """A vague pattern is confirmed only when the probe's country is expected."""
    fset = build_fingerprints([sig("x", "Blocked!", scope="vbw", countries=frozenset({"KZ"}))])
    assert match_http(fset, b"Blocked!", {}, probe_cc="KZ").confirmed  # type: ignore[union-attr]
    assert not match_http(fset, b"Blocked!", {}, probe_cc="RU").confirmed  # type: ignore[union-attr]
    dns = match_dns(bundled, ["62.33.207.196"], probe_cc="US")
    assert dns is not None and dns.name == "ooni.ru_97" and dns.confirmed  # scope nat


def test_false_positive_wins() -> None:
    """A false-positive signature vetoes a blockpage match on the same page."""
    fset = build_fingerprints([sig("bp", "Access denied"), sig("fp", "Cloudflare", scope="fp")])
    assert match_http(fset, b"Access denied", {}).name == "bp"  # type: ignore[union-attr]
    assert match_http(fset, b"Access denied by Cloudflare", {}) is None


def test_scope_order_names_the_most_specific() -> None:
    """When several blockpages match, a national one is named before a vague one."""
    fset = build_fingerprints([sig("vague", "blocked", scope="vbw"),
                               sig("national", "blocked by order", scope="nat")])
    assert match_http(fset, b"site blocked by order 25", {}).name == "national"  # type: ignore[union-attr]


@pytest.mark.parametrize(("kind", "value", "hit"), [
    ("full", "http://block.isp/", True), ("full", "http://block.isp/x", False),
    ("prefix", "http://block.isp/x", True), ("prefix", "https://block.isp/", False),
    ("contains", "see http://block.isp/ now", True), ("regexp", "http://block.isp/", True),
])
def test_header_pattern_types(kind: str, value: str, hit: bool) -> None:
    """Header signatures honour OONI's full/prefix/contains/regexp on the named header only."""
    pattern = r"http://block\.isp/" if kind == "regexp" else "http://block.isp/"
    fset = build_fingerprints([sig("h", pattern, location="header.location", kind=kind)])
    assert (match_http(fset, b"", {"Location": value}) is not None) is hit
    assert match_http(fset, b"", {"X-Other": "http://block.isp/"}) is None


def test_censoredplanet_patterns_see_headers_and_body() -> None:
    """Censored Planet regexes run on header lines plus body, as the pipeline stored them."""
    text = '{"fingerprint":"a_prod_x","pattern":"Server: Barracuda/NGFirewall"}\n\n' \
           '{"fingerprint":"b_nat_y","pattern":"URL .* Sp.*er Gate"}\n'
    fset = build_fingerprints(read_censoredplanet(text, false_positive=False))
    assert match_http(fset, b"", {"Server": "Barracuda/NGFirewall"}).name == "a_prod_x"  # type: ignore[union-attr]
    assert match_http(fset, b"URL blocked by Spider Gate", {}).scope == "nat"  # type: ignore[union-attr]
    assert match_http(fset, b"Spider Gate URL", {}) is None


def test_literal_chain() -> None:
    """Regexes that are literals joined by .* become substring chains; others stay regexes."""
    assert literal_chain(r"a\.b.*c") == ("a.b", "c")
    assert literal_chain("plain text") == ("plain text",)
    assert literal_chain("NTA.s policy") is None and literal_chain("(http|https)://x") is None


def test_general_regex_only_sees_the_window() -> None:
    """A general regex is bounded to the first REGEX_WINDOW bytes; literal chains see all."""
    fset = build_fingerprints([sig("re", "blo(c)k", kind="regexp"), sig("lit", "tail-marker")])
    late = b"x" * REGEX_WINDOW + b"block"
    assert match_http(fset, late, {}) is None
    assert match_http(fset, b"block", {}).name == "re"  # type: ignore[union-attr]
    assert match_http(fset, b"x" * 400_000 + b"tail-marker", {}).name == "lit"  # type: ignore[union-attr]


def test_dns_answers_normalised() -> None:
    """DNS answers match after canonicalising addresses and host names."""
    csv_text = "name,response,confidence_no_fp,exp_url,source,scope,expected_countries,notes\n" \
               "dns_x,Block.Example.,10,,[],isp,['KZ'],\n" \
               "dns_y,2001:DB8:0::1,10,,[],nat,[],\n"
    fset = build_fingerprints(read_citizenlab_dns(csv_text))
    assert match_dns(fset, ["block.example"]).name == "dns_x"  # type: ignore[union-attr]
    assert match_dns(fset, ["2001:db8::1"]).name == "dns_y"  # type: ignore[union-attr]
    assert match_dns(fset, ["8.8.8.8"]) is None


def test_ooni_csv_reader() -> None:
    """OONI rows keep scope, location, kind and expected countries."""
    text = "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp," \
           "expected_countries,source,exp_url,notes\n" \
           'ooni.x,isp,,header.server,prefix,Squid,5,"KZ,KG",ooni,,\n'
    (row,) = read_ooni_csv(text)
    assert (row.location, row.kind, row.expected_countries) == \
        ("header.server", "prefix", frozenset({"KZ", "KG"}))


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared reference data not present")
def test_same_bytes_as_shared_reference() -> None:
    """The bundled copies equal the shared reference files byte for byte."""
    for path in bundled_directory().iterdir():
        if path.name != "SOURCES.md":
            assert path.read_bytes() == (SHARED / path.name).read_bytes(), path.name


def test_large_adversarial_body_is_bounded(bundled: FingerprintSet) -> None:
    """Bodies built from pattern fragments finish quickly (no catastrophic backtracking)."""
    bodies = [b"URL " * 131072, b"<span style=" * 40000, b"You don" * 70000, b'{"msg":' * 70000]
    start = time.perf_counter()
    for body in bodies:
        match_http(bundled, body[:512 * 1024], {"Server": "x" * 1000})
    assert time.perf_counter() - start < 5.0


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=4096), st.dictionaries(st.text(max_size=20), st.text(max_size=50),
                                                  max_size=5))
def test_arbitrary_responses_never_raise(bundled: FingerprintSet, body: bytes,
                                         headers: dict[str, str]) -> None:
    """Any bytes and headers give a Match or None, never an exception."""
    result = match_http(bundled, body, headers)
    assert result is None or result.name


@given(st.lists(st.text(max_size=40), max_size=5))
def test_arbitrary_dns_answers_never_raise(answers: list[str]) -> None:
    """Any answer strings give a Match or None."""
    fset = build_fingerprints([sig("d", "1.2.3.4", location="dns", kind="full")])
    result = match_dns(fset, answers)
    assert result is None or result.name == "d"


def _naive_match(fset: FingerprintSet, body: bytes, headers: dict[str, str]) -> str | None:
    """The definition match_http optimises: try every signature in priority order."""
    page = render_page(body, headers)
    if any(hits(item, body, page, headers) for item in fset.false_positives):
        return None
    return next((item.signature.name for item in fset.blockpages
                 if hits(item, body, page, headers)), None)


def _fragments(fset: FingerprintSet) -> tuple[list[bytes], list[str]]:
    """Pieces of the bundled signatures' own patterns: responses built of them hit often."""
    body_bits: list[bytes] = []
    header_bits: list[str] = []
    for item in (*fset.false_positives, *fset.blockpages):
        pattern = item.signature.pattern
        if item.signature.location.startswith("header"):
            header_bits.append(pattern)
        for chain in item.chains:
            body_bits.extend(chain)
    return body_bits, header_bits


def test_match_http_finds_what_trying_each_signature_in_order_finds(
        bundled: FingerprintSet) -> None:
    """Prefilters (n-gram anchors, header needles) change the cost, never the answer."""
    rng = random.Random(7)
    body_bits, header_bits = _fragments(bundled)
    filler = [b"<html>", b"<title>", b"x" * 40, "Доступ".encode(), b"\r\n", b"</body>"]
    names = ["Server", "Location", "Content-Type", "X-Powered-By", "Set-Cookie", "Via"]
    hit = 0
    for _ in range(1500):
        body = b"".join(rng.choice(body_bits) if rng.random() < 0.15 else rng.choice(filler)
                        for _ in range(rng.randrange(0, 30)))
        headers = {rng.choice(names): (rng.choice(header_bits) if rng.random() < 0.3
                                       else "nginx") for _ in range(rng.randrange(0, 4))}
        expected = _naive_match(bundled, body, headers)
        got = match_http(bundled, body, headers)
        assert (got.name if got else None) == expected, (body[:200], headers)
        hit += expected is not None
    assert 200 < hit < 1400  # both hits and misses were compared
