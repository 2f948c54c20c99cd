"""The config loader never fails with anything but a one-line ConfigError, whatever it reads."""

from __future__ import annotations

import datetime
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kzprobe.config import (
    Config,
    LoadedConfig,
    load_config,
    metrics_exposure,
    parse_config,
    parse_resolver,
)
from kzprobe.config.parse import _NEEDS_BASE, _SECTIONS
from kzprobe.config.section import _Section
from kzprobe.errors import ConfigError
from kzprobe.netaddr import split_hostport


def _keys_read(name: str) -> list[str]:
    """The keys a section's parser reads (so a key added later is covered automatically)."""
    section = _Section("<probe>", name, {})
    parser = _SECTIONS[name]
    parser(section, None) if name in _NEEDS_BASE else parser(section)
    return sorted(section.used)


KEYS = {name: _keys_read(name) for name in _SECTIONS}
ALL_KEYS = [(name, key) for name, keys in KEYS.items() for key in keys]

STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["system", "127.0.0.1", "[::1]:53", "::1", "1.2.3.4:99999", "10.0.0.0/8",
                     "example.com", "127.0.0.1:8765", "[::1]:0", ":80", "host:²", "AS1", "AS²",
                     "KZ", "ÄÖ", "gzip", "zstd", "always", "http://h.test/", "~nosuchuser/x",
                     "~/x", "/dev/null", "a\x00b", "", " ", "0", "-1", "nan", "[", "]:"]),
)
SCALARS = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), STRINGS,
    st.dates(), st.times(), st.datetimes(timezones=st.just(datetime.UTC) | st.none()),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def _section_table(name: str) -> st.SearchStrategy[dict[str, Any]]:
    known = st.sampled_from(KEYS[name]) if KEYS[name] else st.nothing()
    return st.dictionaries(st.one_of(known, st.text(max_size=8)), VALUES, max_size=6)


TOML_DOCS = st.dictionaries(
    st.one_of(st.sampled_from(sorted(_SECTIONS)), st.text(max_size=8)),
    st.one_of(st.sampled_from(sorted(_SECTIONS)).flatmap(_section_table), VALUES),
    max_size=6,
)


def _parses_or_config_error(data: dict[str, Any], base: Path | None) -> LoadedConfig | None:
    try:
        loaded = parse_config(data, where="p.toml", base=base)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("p.toml") and "\n" not in message, message
        return None
    assert isinstance(loaded.config, Config)
    return loaded


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TOML_DOCS)
def test_parse_config_returns_a_config_or_raises_config_error(data: dict[str, Any]) -> None:
    """Any TOML-shaped mapping: a Config, or one ConfigError line naming the file; nothing else."""
    loaded = _parses_or_config_error(data, base=Path(tempfile.gettempdir()))
    if loaded is not None:
        timeouts = loaded.config.timeouts
        assert all(math.isfinite(getattr(timeouts, name)) and getattr(timeouts, name) > 0
                   for name in ("dns", "connect", "tls", "http", "control", "measurement"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_KEYS).flatmap(
    lambda pair: st.tuples(st.just(pair), VALUES)))
def test_any_value_for_any_known_key_is_handled(case: tuple[tuple[str, str], Any]) -> None:
    """Every known key with any value: accepted, or a ConfigError naming [section] key."""
    (name, key), value = case
    try:
        parse_config({name: {key: value}}, where="p.toml")
    except ConfigError as exc:
        assert f"[{name}] {key}" in str(exc) and "\n" not in str(exc), str(exc)


@pytest.mark.parametrize(("name", "key"), ALL_KEYS, ids=[f"{n}.{k}" for n, k in ALL_KEYS])
@pytest.mark.parametrize("value", [{"x": 1}, [{"x": 1}], datetime.date(2024, 1, 1)],
                         ids=["table", "list-of-tables", "date"])
def test_every_key_rejects_a_wrong_type(name: str, key: str, value: Any) -> None:
    """No key takes a table, a list of tables or a date: each is a ConfigError naming the key
    (for a key that holds tables, its first entry, or [[targets.groups]]'s missing name)."""
    with pytest.raises(ConfigError, match=rf"p\.toml: \[{name}\] {key}(\[1\]( name)?)?: "):
        parse_config({name: {key: value}}, where="p.toml")


@pytest.mark.parametrize("name", sorted(_SECTIONS))
def test_every_section_must_be_a_table(name: str) -> None:
    """`section = 5` instead of a table is a ConfigError naming the section."""
    with pytest.raises(ConfigError, match=rf"\[{name}\] must be a table"):
        parse_config({name: 5}, where="p.toml")


TOML_FRAGMENTS = st.lists(st.sampled_from([
    "[limits]\n", "[timeouts]\n", "[dns]\n", "[[targets]]\n", "rate = ", "http = ", "nan", "inf",
    "-inf", "1e309", "0x7f", "'x'", '"\\u0000"', "[", "]", "{", "}", "=", ",", "\n", "\r\n",
    "\ufeff", "true", "1979-05-27", "resolvers = ['system']", "a.b.c = 1", "# c\n", "\x00",
    "\xff", "'''", '"""', "[probe]\ncc = 'KZ'\n",
]), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TOML_FRAGMENTS.map(lambda text: text.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=200)))
def test_load_config_on_any_bytes(content: bytes) -> None:
    """Any file content: a Config, or one ConfigError line naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(content)
        try:
            loaded = load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
        else:
            assert isinstance(loaded.config, Config)


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("tls", "ca_file", "~nosuchuser-kzprobe/ca.pem", "no such file"),  # was RuntimeError
        ("helper", "listen", "127.0.0.1:²", "expected 'host:port'"),  # was int() ValueError
        ("probe", "asn", "AS²", "expected 'AS<number>'"),  # was accepted
        ("probe", "cc", "ÄÖ", "two-letter country code"),  # was accepted
        ("timeouts", "http", math.nan, "must be a finite number"),  # was accepted
        ("limits", "rate", math.inf, "must be a finite number"),  # was accepted
        # host:port is read one way (kzprobe.netaddr): an IPv6 host needs its brackets
        ("helper", "listen", "::1:8765", "expected 'host:port'"),  # was accepted
        ("service", "metrics_listen", "::1:9108", "expected 'host:port'"),  # was accepted
        ("dns", "resolvers", ["127.0.0.1:+53"], "expected 'system'"),  # was int("+53")
        ("dns", "resolvers", ["127.0.0.1:\uff15\uff13"], "expected 'system'"),  # was int()
        ("dns", "resolvers", [], "at least one resolver"),
    ],
)
def test_values_that_used_to_crash_or_pass(name: str, key: str, value: Any, message: str) -> None:
    """Regressions found here: each is now a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=rf"\[{name}\] {key}: .*{message}"):
        parse_config({name: {key: value}}, where="p.toml")


@given(st.text(alphabet="0123456789abcdef.:[] ", max_size=24))
@example("[::1]:5353")
@example("[::1]")
@example("127.0.0.1:53")
def test_resolver_text_round_trips(spec: str) -> None:
    """A resolver that parses is written back (``str``) as text that parses to itself."""
    try:
        resolver = parse_resolver(spec)
    except ValueError:
        return
    assert parse_resolver(str(resolver)) == resolver
    assert split_hostport(str(resolver)) == (resolver.address, resolver.port)


@pytest.mark.parametrize(("listen", "exposure"), [
    ("", None), ("127.0.0.1:9108", None), ("[::1]:9108", None),
    ("0.0.0.0:9108", "every address"), ("[::]:9108", "every address"),
    ("192.0.2.1:9108", "the non-loopback address 192.0.2.1"),
    ("[2001:db8::1]:9108", "the non-loopback address 2001:db8::1"),
])
def test_metrics_exposure_reads_host_port_one_way(listen: str, exposure: str | None) -> None:
    """The metrics listener's host is read as the parser checked it (IPv6 in brackets)."""
    assert metrics_exposure(listen) == exposure
    loaded = parse_config({"service": {"metrics_listen": listen}})
    assert loaded.config.service.metrics_listen == listen
    assert any("metrics_listen" in w for w in loaded.warnings) == (exposure is not None)


# Values near every bound and every format rule, for the startup property below.
STARTUP_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 255, 256, 1024, 100_000, 100_001, 10**9, 2**40, 2**50, 2**62,
                     2**63 - 1, 0.5, 86400.0, 86401.0, 1e6, 1e9, 1e300]),
    st.sampled_from(["", "h2", "http/1.1", "x" * 255, "x" * 256, "h2\u00e9", "kz", "kz\n",
                     "kz\x00", "ca.pem", "notpem.txt", "0.0.0.0:0", "127.0.0.1:0", "[::1]:0",
                     "10.0.0.0/8", "0.0.0.0/0", "::ffff:0:0/96", "127.0.0.1/32", "gzip"]),
    st.lists(st.sampled_from(["", "h2", "x" * 255, "x" * 256, "10.0.0.0/8", "::/0",
                              "127.0.0.0/8", "notpem.txt", "ca.pem"]), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(ALL_KEYS), STARTUP_VALUES, max_size=3))
# Configs check-config used to accept and ``run`` crashed on (always tried first):
@example({("tls", "ca_file"): "notpem.txt"})
@example({("tls", "alpn"): [""]})
@example({("tls", "alpn"): ["x" * 256]})
@example({("tls", "alpn"): ["h2\u00e9"]})
@example({("output", "prefix"): "kz\x00"})
def test_what_check_config_accepts_run_starts_with(values: dict[tuple[str, str], Any]) -> None:
    """A config the parser (check-config) accepts never fails ``run``'s start-up: the engine
    with its TLS contexts and fingerprints, the writer, the helper's context."""
    import asyncio

    import certifi

    from kzprobe.engine import build_engine
    from kzprobe.helper import _server_ssl
    from kzprobe.storage.sink import NdjsonSink

    data: dict[str, dict[str, Any]] = {"analysis": {"worker_process": False}}
    for (name, key), value in values.items():
        data.setdefault(name, {})[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "ca.pem").write_bytes(Path(certifi.where()).read_bytes())
        (base / "notpem.txt").write_text("not a certificate\n")
        loaded = _parses_or_config_error(data, base=base)
        if loaded is None:
            return
        config = loaded.config

        async def start() -> None:
            engine = build_engine(config, _discard)
            try:
                NdjsonSink(config.output)
                _server_ssl(config)
            finally:
                await engine.aclose()

        asyncio.run(start())


async def _discard(record: dict[str, Any]) -> None:
    return None
