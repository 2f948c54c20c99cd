"""Targets: URLs from the config and Citizen Lab test-list CSV files.

Bad rows are skipped with a warning that names file and line; a file that cannot be
read at all is a :class:`TargetError`. Host names are IDNA-encoded here, once, so every
probe puts punycode on the wire.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna

from kzprobe.bogons import parse_ip_loose
from kzprobe.errors import TargetError

CSV_COLUMNS = ("url", "category_code", "category_description", "date_added", "source", "notes")
SUPPORTED_SCHEMES = ("http", "https")
MAX_LINE_BYTES = 64 * 1024
MAX_FILE_BYTES = 256 * 1024 * 1024


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

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _encode_host(host: str) -> str:
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    loose = parse_ip_loose(host)
    if loose is not None:  # 2130706433, 0177.0.0.1, 0x7f.1: what browsers dial, normalised
        return str(loose)
    if host.isascii():
        labels = host.lower().split(".")
        if any(label.startswith("xn--") for label in labels):
            idna.decode(host)  # validates the punycode
        elif not all(labels) or any(len(label) > 63 for label in labels):
            raise ValueError(f"invalid host name {host!r}")
        return host.lower()
    return idna.encode(host, uts46=True).decode("ascii")


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
    parts: SplitResult = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r} in {raw!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"port out of range in {raw!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {raw!r}")
    if any(c in host for c in " \t\r\n/\\@"):
        raise ValueError(f"invalid host in {raw!r}")
    try:
        ascii_host = _encode_host(host)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise ValueError(f"invalid host name in {raw!r}: {exc}") from None
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


def _csv_rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """Rows with their line numbers; a row the csv module rejects yields the reason."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's limit: skip that row
            yield reader.line_num, f"malformed CSV row: {exc}"
            continue
        yield reader.line_num, row


def read_target_file(path: Path) -> tuple[list[Target], list[str]]:
    """Read a Citizen Lab CSV; return the targets and one warning per skipped row."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TargetError(f"{path}: target list too large ({size} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TargetError(f"{path}: target list not found") from None
    except OSError as exc:
        raise TargetError(f"{path}: cannot read target list: {exc.strerror or exc}") from None
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


def load_targets(urls: Iterable[str], files: Iterable[Path]) -> tuple[list[Target], list[str]]:
    """All targets from config URLs and list files, deduplicated, with warnings."""
    collected: list[Target] = []
    warnings: list[str] = []
    for index, url in enumerate(urls):
        try:
            collected.append(parse_target(url, origin=f"[targets] urls[{index}]"))
        except ValueError as exc:
            warnings.append(f"[targets] urls[{index}]: {exc}; skipped")
    for path in files:
        found, problems = read_target_file(path)
        collected.extend(found)
        warnings.extend(problems)
    unique, dupes = dedupe(collected)
    return unique, warnings + dupes
