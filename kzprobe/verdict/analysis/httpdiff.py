"""HTTP comparison primitives, as OONI's ``minipipeline/httpdiff.go`` computes them."""

from __future__ import annotations

from collections.abc import Iterable

# Headers too common to say anything about who answered (httpdiff.go).
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location",
    "expires", "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma",
    "x-frame-options", "etag", "x-content-type-options", "age", "via", "p3p",
    "x-xss-protection", "content-language", "cf-ray", "strict-transport-security", "link",
    "x-varnish",
})
BODY_PROPORTION_THRESHOLD = 0.7
MIN_TITLE_WORD_BYTES = 5  # Go counts bytes, so short Cyrillic words qualify


def body_proportion_factor(measured: int, control: int) -> float:
    """min/max of the two body lengths (both must be positive)."""
    return min(measured, control) / max(measured, control)


def status_code_match(measured: int, control: int) -> bool | None:
    """Equal codes match; unequal codes are undecided when the control did not get 2xx."""
    if measured != control and control // 100 != 2:
        return None
    return measured == control


def uncommon_headers_intersection(measured: Iterable[str],
                                  control: Iterable[str]) -> frozenset[str]:
    """Lower-cased header names, outside :data:`COMMON_HEADERS`, present on both sides."""
    probe = {name.lower() for name in measured} - COMMON_HEADERS
    return frozenset(probe & ({name.lower() for name in control} - COMMON_HEADERS))


def _long_words(title: str) -> set[str]:
    return {word.lower() for word in title.split(" ")
            if len(word.encode("utf-8", "surrogatepass")) >= MIN_TITLE_WORD_BYTES}


def title_different_long_words(measured: str, control: str) -> frozenset[str]:
    """Long title words (>= 5 bytes, lower-cased) that appear in only one of the titles."""
    return frozenset(_long_words(measured) ^ _long_words(control))


def http_diff(status_match: bool | None, body_match: bool | None, headers_match: bool | None,
              title_match: bool | None) -> bool:
    """OONI's rule: no diff iff status matches and (body or headers or title) match."""
    return not (status_match is True
                and (body_match is True or headers_match is True or title_match is True))
