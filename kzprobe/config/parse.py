"""Parsing a whole config: every section once, unknown sections and keys reported as
warnings (check-config --strict fails on them), the file read bounded.

Each section is parsed on its own and its problems collected (``check_config``), so one run
of check-config reports them all, each with its line; ``parse_config`` and ``load_config``
raise the first, for the commands that just need a Config."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kzprobe.config.alerts import _parse_alerts
from kzprobe.config.anchors import _parse_network
from kzprobe.config.control import _parse_control
from kzprobe.config.geoip import _parse_geoip
from kzprobe.config.helper import _parse_helper
from kzprobe.config.model import Config
from kzprobe.config.positions import Positions
from kzprobe.config.section import _Section, suggest
from kzprobe.config.sections import (
    _parse_analysis,
    _parse_dns,
    _parse_http3,
    _parse_limits,
    _parse_output,
    _parse_probe,
    _parse_schedule,
    _parse_service,
    _parse_targets,
    _parse_timeouts,
)
from kzprobe.config.tls import _parse_tls
from kzprobe.config.upload import _parse_upload
from kzprobe.errors import ConfigError
from kzprobe.localfiles import LocalFileError, MissingFileError, read_regular

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; never read /dev/zero or a 1 GB line whole


_SECTIONS: dict[str, Callable[..., Any]] = {
    "probe": _parse_probe,
    "dns": _parse_dns,
    "tls": _parse_tls,
    "timeouts": _parse_timeouts,
    "limits": _parse_limits,
    "schedule": _parse_schedule,
    "output": _parse_output,
    "targets": _parse_targets,
    "analysis": _parse_analysis,
    "control": _parse_control,
    "service": _parse_service,
    "helper": _parse_helper,
    "alerts": _parse_alerts,
    "network": _parse_network,
    "geoip": _parse_geoip,
    "http3": _parse_http3,
    "upload": _parse_upload,
}


_NEEDS_BASE = {"tls", "output", "targets", "helper", "analysis", "control", "alerts", "geoip"}


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A parsed config plus the non-fatal problems found (unknown keys)."""

    config: Config
    warnings: tuple[str, ...]
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """Every problem of a config, each one line naming file, line (when known) and key; the
    loaded config only when there is no error."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    loaded: LoadedConfig | None


def check_config(
    data: Mapping[str, Any],
    *,
    where: str = "<config>",
    base: Path | None = None,
    source: Path | None = None,
    positions: Positions | None = None,
) -> ConfigCheck:
    """Check every section of a TOML mapping, each on its own, and collect all problems."""
    errors: list[str] = []
    warnings: list[str] = []
    parts: dict[str, Any] = {}
    for name, value in data.items():
        line = positions.line((name,)) if positions else None
        at = where if line is None else f"{where}:{line}"
        if name not in _SECTIONS:
            match = suggest(name, _SECTIONS)
            hint = "" if match is None else f"; did you mean [{match}]?"
            warnings.append(f"{at}: unknown section [{name}]{hint}")
        elif not isinstance(value, dict):
            errors.append(f"{at}: [{name}] must be a table")
    for name, parser in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            continue
        section = _Section(where, name, table, positions=positions)
        try:
            parts[name] = parser(section, base) if name in _NEEDS_BASE else parser(section)
        except ConfigError as exc:  # this section stops here; the others are still checked
            section.record(exc)
        errors.extend(str(error) for error in section.errors)
        warnings.extend(section.warnings)
        warnings.extend(section.unknown_keys(_known_keys(name)))
    if errors:
        return ConfigCheck(errors=tuple(errors), warnings=tuple(warnings), loaded=None)
    loaded = LoadedConfig(config=Config(source=source, **parts), warnings=tuple(warnings),
                          raw=data)
    return ConfigCheck(errors=(), warnings=loaded.warnings, loaded=loaded)


@functools.cache
def _known_keys(name: str) -> frozenset[str]:
    """The keys section ``name`` reads: its parser run on an empty table."""
    section = _Section("<keys>", name, {})
    parser = _SECTIONS[name]
    parser(section, None) if name in _NEEDS_BASE else parser(section)
    return frozenset(section.used)


def parse_config(
    data: Mapping[str, Any],
    *,
    where: str = "<config>",
    base: Path | None = None,
    source: Path | None = None,
    positions: Positions | None = None,
) -> LoadedConfig:
    """Build a :class:`Config` from a TOML mapping; raise :class:`ConfigError` with the first
    problem (:func:`check_config` gives them all)."""
    check = check_config(data, where=where, base=base, source=source, positions=positions)
    if check.loaded is None:
        raise ConfigError(check.errors[0])
    return check.loaded


def _read_config_text(path: Path) -> str:
    """The file's text, read at most MAX_CONFIG_BYTES + 1 bytes (it may be /dev/zero)."""
    try:
        return read_regular(path, MAX_CONFIG_BYTES, "config").decode("utf-8-sig")
    except MissingFileError:
        raise ConfigError(f"{path}: config file not found") from None
    except LocalFileError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def check_config_file(path: Path) -> ConfigCheck:
    """Read a TOML config file and check all of it; relative paths in it are relative to the
    file. A file that cannot be read or is not TOML raises :class:`ConfigError`."""
    text = _read_config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or table: [[[[...
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return check_config(data, where=str(path), base=path.resolve().parent, source=path,
                        positions=Positions(text))


def load_config(path: Path) -> LoadedConfig:
    """Read and parse a TOML config file; raise :class:`ConfigError` with its first problem."""
    check = check_config_file(path)
    if check.loaded is None:
        raise ConfigError(check.errors[0])
    return check.loaded
