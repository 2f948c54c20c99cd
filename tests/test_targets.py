"""Target parsing: Citizen Lab CSV as-is, bad rows skipped with file:line warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzprobe.errors import TargetError
from kzprobe.targets import load_targets, parse_target, read_target_file

HEADER = "url,category_code,category_description,date_added,source,notes\n"


def test_bundled_kz_list_parses_without_losing_rows() -> None:
    """The bundled Citizen Lab kz.csv loads; every skipped row has a reason."""
    targets, warnings = read_target_file(Path("config/targets/kz.csv"))
    lines = Path("config/targets/kz.csv").read_text(encoding="utf-8").splitlines()
    assert len(targets) + len(warnings) == len(lines) - 1
    assert all(t.scheme in ("http", "https") for t in targets)
    assert {t.category_code for t in targets} >= {"NEWS", "HUMR", "POLR"}


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://Example.COM", "https://example.com/"),
        ("http://example.com:80/a?b=c", "http://example.com/a?b=c"),
        ("https://пример.испытание/путь", "https://xn--e1afmkfd.xn--80akhbyknj4f/путь"),
        ("https://[2001:db8::1]:8443/", "https://[2001:db8::1]:8443/"),
        ("http://198.18.0.1:8080/x", "http://198.18.0.1:8080/x"),
        ("https://example.com./", "https://example.com/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0x7f.1:8080/", "http://127.0.0.1:8080/"),
    ],
)
def test_urls_are_normalised(url: str, normalised: str) -> None:
    """Hosts are lower-cased and IDNA-encoded, default ports dropped, IPv6 kept bracketed."""
    assert parse_target(url).url == normalised


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("example.com", "no scheme"),
        ("ftp://example.com/", "unsupported scheme"),
        ("https://example.com:99999/", "port out of range"),
        ("https://example.com:0/", "port out of range"),
        ("https:///path", "no host"),
        ("https://exa mple.com/", "invalid host"),
        ("https://xn--zz.com/", "invalid host name"),
        ("https://" + "a" * 64 + ".com/", "invalid host name"),
    ],
)
def test_bad_urls_are_rejected_with_a_reason(url: str, reason: str) -> None:
    """Unusable URLs raise ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=reason):
        parse_target(url)


def test_bom_crlf_bad_rows_and_duplicates(tmp_path: Path) -> None:
    """BOM and CRLF are accepted; wrong column counts, bad URLs and duplicates are warned."""
    path = tmp_path / "list.csv"
    path.write_bytes(("\ufeff" + HEADER + "https://a.test/,NEWS,News,2020-01-01,cl,\n"
                      "https://b.test/,NEWS,News\n"
                      "mailto:x@y.test,NEWS,News,2020-01-01,cl,\n"
                      "https://A.test,NEWS,News,2020-01-01,cl,\n").replace("\n", "\r\n")
                     .encode("utf-8"))
    targets, warnings = load_targets([], [path])
    assert [t.url for t in targets] == ["https://a.test/"]
    assert targets[0].category_code == "NEWS"
    assert any(w.startswith(f"{path}:3:") and "columns" in w for w in warnings)
    assert any(w.startswith(f"{path}:4:") and "scheme" in w for w in warnings)
    assert any(w.startswith(f"{path}:5:") and "duplicate" in w for w in warnings)


def test_missing_and_non_utf8_files_are_errors(tmp_path: Path) -> None:
    """Unreadable lists are a TargetError naming the file."""
    with pytest.raises(TargetError, match="not found"):
        read_target_file(tmp_path / "absent.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(HEADER.encode() + b"http://caf\xe9.test/,NEWS,News,2020,cl,\n")
    with pytest.raises(TargetError, match="not UTF-8"):
        read_target_file(bad)


def test_huge_url_cell_is_skipped(tmp_path: Path) -> None:
    """A multi-megabyte URL cell is skipped with a warning, not parsed."""
    path = tmp_path / "huge.csv"
    path.write_text(HEADER + "https://a.test/" + "x" * 2_000_000 + ",NEWS,News,2020,cl,\n"
                    "https://b.test/,NEWS,News,2020,cl,\n")
    targets, warnings = read_target_file(path)
    assert [t.url for t in targets] == ["https://b.test/"]
    assert "field larger than field limit" in warnings[0] or "longer than" in warnings[0]


@given(st.text(max_size=200))
def test_parse_target_never_raises_anything_but_value_error(text: str) -> None:
    """Arbitrary text either parses into an http(s) target or raises ValueError."""
    try:
        target = parse_target(text)
    except ValueError:
        return
    assert target.scheme in ("http", "https")
    assert target.host and target.url.startswith(target.scheme + "://")
    assert 0 < target.port < 65536


def test_unterminated_quote_is_reported_and_the_rows_after_it_are_kept(tmp_path: Path) -> None:
    """A stray opening quote used to swallow the next row into one bogus URL: now that line
    is skipped with a file:line warning and every following row is read on its own."""
    path = tmp_path / "list.csv"
    path.write_text(HEADER + '"https://a.test/,NEWS,News,2020-01-01,cl,\n'
                    '"https://b.test/",NEWS,News,2020-01-01,cl,\n'
                    "https://c.test/,NEWS,News,2020-01-01,cl,\n"
                    'https://d.test/,NEWS,News,2020-01-01,cl,"two\nlines"\n'
                    "https://e.test/,NEWS,News,2020-01-01,cl,\n", encoding="utf-8")
    targets, warnings = read_target_file(path)
    assert [t.url for t in targets] == ["https://b.test/", "https://c.test/",
                                        "https://d.test/", "https://e.test/"]
    assert [t.origin for t in targets] == [f"{path}:{n}" for n in (3, 4, 5, 7)]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:2: unterminated quote")


def test_unterminated_quote_on_the_last_row(tmp_path: Path) -> None:
    """A quote opened on the last line and never closed: that row is reported, others kept."""
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "https://a.test/,NEWS,News,2020-01-01,cl,\n"
                    'https://b.test/,NEWS,News,2020-01-01,cl,"note\n', encoding="utf-8")
    targets, warnings = read_target_file(path)
    assert [t.url for t in targets] == ["https://a.test/"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:3:")


@pytest.mark.parametrize(
    ("url", "host", "path"),
    [
        ("http://h.test\\@evil.test/", "h.test", "/@evil.test/"),
        ("https://h.test\\evil.test", "h.test", "/evil.test"),
        ("http://h.test:8080\\x?a=\\b", "h.test", "/x?a=\\b"),
        ("http://u@h.test/", "h.test", "/"),
    ],
)
def test_backslash_ends_the_host_as_in_browsers(url: str, host: str, path: str) -> None:
    """WHATWG URL: in http(s), "\\" is "/", so the host is what a browser would dial."""
    target = parse_target(url)
    assert (target.host, target.path) == (host, path)


@pytest.mark.parametrize("url", [
    "http://h\x01.test/", "http://h\x7f.test/", "http://h.test\x00/", "http://h\x1b.test/",
    "http://h<x.test/", "http://h>x.test/", "http://h^x.test/", "http://h|x.test/",
    "tcp://h\x01.test:443", "tcp://h.test\\@evil.test:443",
])
def test_forbidden_host_code_points_are_rejected(url: str) -> None:
    """Control characters and WHATWG's forbidden host code points never reach a resolver."""
    with pytest.raises(ValueError, match="invalid host"):
        parse_target(url)


@pytest.mark.parametrize("url", [
    "http://256.0.0.1/", "http://1.2.3.4.5/", "http://1.2.3.09/", "http://foo.123/",
    "http://0x100000000/", "http://1.2.3.256/", "http://h.0x1/", "https://4294967296/",
])
def test_hosts_ending_in_a_number_are_ipv4_or_invalid(url: str) -> None:
    """WHATWG: a host whose last label is a number is an IPv4 address; if that address is
    invalid the URL is, never a DNS name to look up."""
    with pytest.raises(ValueError, match="IPv4"):
        parse_target(url)


@pytest.mark.parametrize(("url", "host"), [
    ("http://0x7f.1/", "127.0.0.1"), ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"), ("http://1.2.3.4./", "1.2.3.4"),
    ("http://123.test/", "123.test"), ("http://a.b1/", "a.b1"),
])
def test_other_ipv4_spellings_are_normalised(url: str, host: str) -> None:
    """Hex, octal and short forms are what browsers dial: normalised to the dotted quad."""
    assert parse_target(url).host == host
