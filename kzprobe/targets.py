"""Targets: URLs from the config and Citizen Lab test-list CSV files.

Bad rows are skipped with a warning that names file and line; a file that cannot be
read at all is a :class:`TargetError`. Host names are IDNA-encoded here, once, so every
probe puts punycode on the wire.

Besides http(s) URLs, a target can be an *endpoint* URI, ``scheme://host:port[?k=v&...]``
(the schemes of :mod:`kzprobe.measure.registry`): the port is required, there is no path,
and each scheme accepts only its own parameters (``ExperimentSpec.params``), validated
here so a typo fails at load time, not at 3 a.m.

Hosts are read as a browser reads them (WHATWG URL): in http(s) a backslash is a slash, so
``http://h.test\\@evil.test/`` measures h.test; control characters and the forbidden host
code points are refused; a host whose last label is a number is IPv4 (hex, octal and short
forms such as ``0x7f.1`` normalised to the dotted quad, what the browser dials) or invalid
(``256.0.0.1``, ``1.2.3.4.5``, ``foo.123``), never a name to look up.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import idna

from kzprobe.errors import TargetError
from kzprobe.localfiles import LocalFileError, MissingFileError, TooLargeError, read_regular
from kzprobe.measure.params import encode_host
from kzprobe.measure.registry import ExperimentSpec, find_spec

CSV_COLUMNS = ("url", "category_code", "category_description", "date_added", "source", "notes")
MAX_PARAM_BYTES = 1024
MAX_LINE_BYTES = 64 * 1024
MAX_FILE_BYTES = 32 * 1024 * 1024  # Citizen Lab's global list is ~0.2 MiB; parsing is in memory


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One thing to measure."""

    input: str  # as written in the list
    url: str  # normalised, host in punycode
    scheme: str
    host: str  # ASCII (punycode) host, IPv6 without brackets
    port: int
    path: str  # path + query, at least "/"
    category_code: str | None = None
    origin: str = "<config>"  # file:line it came from
    params: tuple[tuple[str, str], ...] = ()  # endpoint URI parameters, sorted by name
    group: str = "default"  # the [[targets.groups]] name (records: annotations.kzprobe_group)
    body_bytes: int | None = None  # its group's body snapshot cap; None: [limits] body_bytes

    @property
    def is_endpoint(self) -> bool:
        spec = find_spec(self.scheme)
        return spec is not None and spec.kind == "endpoint"

    def param(self, name: str, default: str | None = None) -> str | None:
        """An endpoint parameter's (percent-decoded) value, or ``default``."""
        return next((value for key, value in self.params if key == name), default)

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _bracketed_name(netloc: str) -> bool:
    """True for a bracketed literal that is not IPv6 (IPvFuture like ``[v1.fe]``)."""
    start, end = netloc.find("["), netloc.find("]")
    if start < 0 or end < start:
        return False
    try:
        ipaddress.IPv6Address(netloc[start + 1:end])
    except ValueError:
        return True
    return False


def _netloc(host: str, port: int, default_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


def parse_target(
    text: str, *, category_code: str | None = None, origin: str = "<config>"
) -> Target:
    """Parse and normalise one URL; raise ValueError with a short reason."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty URL")
    if "://" not in raw:
        raise ValueError(f"no scheme in {raw!r}")
    spec = find_spec(raw.partition("://")[0].lower())
    if spec is not None and spec.kind == "web":
        raw = _backslashes_as_slashes(raw)
    parts: SplitResult = urlsplit(raw)
    scheme = parts.scheme.lower()
    spec = find_spec(scheme)
    if spec is None or (origin == "redirect" and spec.kind != "web"):
        raise ValueError(f"unsupported scheme {scheme!r} in {raw!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"port out of range in {raw!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {raw!r}")
    if any(c in host for c in " \t\r\n/\\@%\x00") or "\\" in parts.netloc \
            or _bracketed_name(parts.netloc):
        # %-escapes and zone ids ("%25eth0") never reach a resolver or an interface
        # name, and "[v1.fe]" (IPvFuture) is not a DNS name.
        raise ValueError(f"invalid host in {raw!r}")
    try:
        ascii_host = encode_host(host)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise ValueError(f"invalid host name in {raw!r}: {exc}") from None
    if spec.kind == "endpoint":
        return _endpoint_target(raw, parts, spec, scheme, ascii_host, port, category_code,
                                origin)
    default_port = 443 if scheme == "https" else 80
    if port == 0:
        raise ValueError(f"port out of range in {raw!r}")
    port = port or default_port
    path = parts.path or "/"
    url = urlunsplit((scheme, _netloc(ascii_host, port, default_port), path, parts.query, ""))
    return Target(
        input=raw,
        url=url,
        scheme=scheme,
        host=ascii_host,
        port=port,
        path=path + (f"?{parts.query}" if parts.query else ""),
        category_code=category_code,
        origin=origin,
    )


def _backslashes_as_slashes(url: str) -> str:
    """WHATWG URL, special schemes: "\\" before the query is "/" (so in
    ``http://h.test\\@evil.test/`` the host is h.test, as a browser sees it)."""
    scheme, sep, rest = url.partition("://")
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    return scheme + sep + rest[:cut].replace("\\", "/") + rest[cut:]


def _endpoint_params(spec: ExperimentSpec, scheme: str,
                     query: str) -> tuple[tuple[str, str], ...]:
    """Split ``k=v&k=v`` (percent-decoded; ``+`` is literal: base64 keys contain it) and
    validate each with the kind's own validator (``spec.params``)."""
    allowed = spec.params
    found: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, sep, raw_value = item.partition("=")
        value = unquote(raw_value)
        if not sep or not value or len(value) > MAX_PARAM_BYTES:
            raise ValueError(f"parameter {name!r} needs a value")
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"unknown parameter {name!r} for {scheme}:// (accepted: {known})")
        if name in found:
            raise ValueError(f"parameter {name!r} given twice")
        try:
            found[name] = allowed[name](value)
        except (ValueError, UnicodeError, idna.IDNAError) as exc:
            raise ValueError(f"bad {name}: {exc}") from None
    missing = [name for name in spec.required if name not in found]
    if missing:
        raise ValueError(f"{scheme}:// needs {', '.join(missing)}")
    return tuple(sorted(found.items()))


def _endpoint_target(raw: str, parts: SplitResult, spec: ExperimentSpec, scheme: str,
                     host: str, port: int | None, category_code: str | None,
                     origin: str) -> Target:
    if not port:
        raise ValueError(f"{scheme}:// needs a port (host:port) in {raw!r}")
    path = parts.path if spec.path else ""  # only a kind that takes one (doh://) keeps it
    if parts.path not in ("", "/", path) or parts.fragment or parts.username or parts.password:
        raise ValueError(f"an endpoint is scheme://host:port[?params], got {raw!r}")
    try:
        params = _endpoint_params(spec, scheme, parts.query)
    except ValueError as exc:
        raise ValueError(f"{exc} in {raw!r}") from None
    query = "&".join(f"{k}={quote(v, safe='/+=:')}" for k, v in params)
    url = urlunsplit((scheme, _netloc(host, port, 0), path, query, ""))
    return Target(input=raw, url=url, scheme=scheme, host=host, port=port, path=path or "/",
                  category_code=category_code, origin=origin, params=params)


class _Lines:
    """Physical lines fed to csv.reader one at a time, so a row can be re-read from any line."""

    def __init__(self, text: str) -> None:
        self.lines = io.StringIO(text, newline="").readlines()  # ends kept: \n, \r\n or \r
        self.next = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.next >= len(self.lines):
            raise StopIteration
        self.next += 1
        return self.lines[self.next - 1]


_UNTERMINATED = "unterminated quote (a quoted field runs on past its line)"
_QUOTE_ERRORS = ("unexpected end of data", "expected after '\"'")


def _swallowed_a_line(row: list[str]) -> bool:
    """A quoted field ran past its line: a stray quote, unless the row is still well-formed
    (a quoted note may hold a line break; a URL never does)."""
    return len(row) != len(CSV_COLUMNS) or any(c in row[0] for c in "\r\n")


def _csv_rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """Rows with their line numbers; a row the csv module rejects yields the reason.

    A quote opened and never closed makes csv read on into the following lines (merging
    rows into one bogus URL): that line is reported and reading resumes at the next one.
    """
    lines = _Lines(text)
    # strict: text after a closing quote, or a quote still open at the end, is an error
    reader = csv.reader(lines, strict=True)
    while lines.next < len(lines.lines):
        start = lines.next
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's limit: skip that row
            quoting = any(sign in str(exc) for sign in _QUOTE_ERRORS)
            yield start + 1, _UNTERMINATED if quoting else f"malformed CSV row: {exc}"
        else:
            if not (lines.next - start > 1 and _swallowed_a_line(row)):
                yield start + 1, row
                continue
            yield start + 1, _UNTERMINATED
        lines.next = start + 1  # the rows after the bad line are read on their own
        reader = csv.reader(lines, strict=True)  # a fresh parser: no state left over


def read_target_file(path: Path) -> tuple[list[Target], list[str]]:
    """Read a Citizen Lab CSV; return the targets and one warning per skipped row."""
    try:  # a regular file only, at most MAX_FILE_BYTES + 1 read: never /dev/zero or a FIFO
        data = read_regular(path, MAX_FILE_BYTES, "target list")
    except MissingFileError:
        raise TargetError(f"{path}: target list not found") from None
    except TooLargeError as exc:
        raise TargetError(f"{path}: target list too large ({exc.size} bytes)") from None
    except LocalFileError as exc:
        raise TargetError(str(exc)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TargetError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return _parse_csv_text(path, text)


def _parse_csv_text(path: Path, text: str) -> tuple[list[Target], list[str]]:
    targets: list[Target] = []
    warnings: list[str] = []
    header_seen = False
    for line, row in _csv_rows(text):
        if isinstance(row, str):
            warnings.append(f"{path}:{line}: {row}; row skipped")
            continue
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
            continue
        if not header_seen and row[0].strip().lower() == "url":
            header_seen = True
            continue
        target = _row_target(path, line, row, warnings)
        if target is not None:
            targets.append(target)
    return targets, warnings


def _row_target(path: Path, line: int, row: list[str], warnings: list[str]) -> Target | None:
    where = f"{path}:{line}"
    if len(row) != len(CSV_COLUMNS):
        warnings.append(
            f"{where}: expected {len(CSV_COLUMNS)} columns, got {len(row)}; row skipped"
        )
        return None
    if len(row[0]) > MAX_LINE_BYTES:
        warnings.append(f"{where}: URL longer than {MAX_LINE_BYTES} bytes; row skipped")
        return None
    try:
        return parse_target(row[0], category_code=row[1].strip() or None, origin=where)
    except ValueError as exc:
        warnings.append(f"{where}: {exc}; row skipped")
        return None


def dedupe(targets: Iterable[Target]) -> tuple[list[Target], list[str]]:
    """Keep the first occurrence of each normalised URL; warn about the rest."""
    seen: dict[str, Target] = {}
    warnings = []
    for target in targets:
        first = seen.get(target.url)
        if first is None:
            seen[target.url] = target
        else:
            warnings.append(f"{target.origin}: duplicate of {first.origin} ({target.url}); skipped")
    return list(seen.values()), warnings


def load_targets(urls: Iterable[str], files: Iterable[Path], *,
                 where: str = "[targets]") -> tuple[list[Target], list[str]]:
    """All targets from config URLs and list files, deduplicated, with warnings."""
    collected: list[Target] = []
    warnings: list[str] = []
    for index, url in enumerate(urls):
        try:
            collected.append(parse_target(url, origin=f"{where} urls[{index}]"))
        except ValueError as exc:
            warnings.append(f"{where} urls[{index}]: {exc}; skipped")
    for path in files:
        found, problems = read_target_file(path)
        collected.extend(found)
        warnings.extend(problems)
    unique, dupes = dedupe(collected)
    return unique, warnings + dupes
