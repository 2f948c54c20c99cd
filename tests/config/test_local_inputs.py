"""Every local input is bounded, and check-config is as strict as ``run``.

Files the config names (the config itself, target lists, fingerprint CSVs, a CA bundle, the
helper's TLS and WireGuard key files) may be /dev/zero or a FIFO: a one-line error and exit
2, fast, never a hang or a MemoryError. A config check-config accepts starts the daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kzprobe.config import parse_config
from kzprobe.engine import build_engine
from kzprobe.errors import ConfigError

KZPROBE = [sys.executable, "-m", "kzprobe"]


def _check(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KZPROBE, "check-config", *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path


def _config(tmp_path: Path, body: str, urls: str = "['http://127.0.0.1/']") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"[targets]\nurls = {urls}\n{body}", encoding="utf-8")
    return path


# ---------------------------------------------------------------- a. not regular files


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_check_config_on_a_config_that_is_not_a_regular_file(
        kind: str, fifo: Path) -> None:
    """/dev/zero or a FIFO as the config: one line, exit 2, within seconds."""
    path = Path("/dev/zero") if kind == "dev_zero" else fifo
    started = time.monotonic()
    line = _one_line_error(_check(str(path)))
    assert time.monotonic() - started < 10
    assert str(path) in line and "not a regular file" in line


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
@pytest.mark.parametrize("section,key", [
    ("targets", "files"), ("analysis", "fingerprint_files"), ("tls", "ca_file"),
])
def test_check_config_on_named_files_that_are_not_regular(
        kind: str, section: str, key: str, tmp_path: Path, fifo: Path) -> None:
    """/dev/zero or a FIFO as a target list, fingerprint CSV or CA file: one line, exit 2."""
    path = Path("/dev/zero") if kind == "dev_zero" else fifo
    value = f"['{path}']" if key.endswith("files") else f"'{path}'"
    if section == "targets":
        config = _config(tmp_path, "", urls=f"[]\nfiles = {value}")
    else:
        config = _config(tmp_path, f"[{section}]\n{key} = {value}\n")
    started = time.monotonic()
    line = _one_line_error(_check(str(config)))
    assert time.monotonic() - started < 10
    assert str(path) in line and "not a regular file" in line


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_helper_files_that_are_not_regular_are_config_errors(
        kind: str, tmp_path: Path, fifo: Path) -> None:
    """The helper's TLS files and WireGuard key files: regular files only, read bounded."""
    path = str(Path("/dev/zero") if kind == "dev_zero" else fifo)
    regular = tmp_path / "k"
    regular.write_text("x")
    cases = [
        {"tls_cert": path, "tls_key": str(regular)},
        {"tls_cert": str(regular), "tls_key": path},
        {"wireguard_peers": [{"public_key": "k", "private_key_file": path}]},
    ]
    for helper in cases:
        with pytest.raises(ConfigError, match="not a regular file"):
            parse_config({"helper": helper}, where="p.toml")


def test_read_regular_is_bounded(tmp_path: Path, fifo: Path) -> None:
    """At most limit + 1 bytes are read; a FIFO is refused without blocking in open()."""
    from kzprobe.localfiles import LocalFileError, read_regular

    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    assert read_regular(big, 5000, "thing") == b"x" * 5000
    with pytest.raises(LocalFileError, match="larger than 4999 bytes"):
        read_regular(big, 4999, "thing")
    with pytest.raises(LocalFileError, match="not a regular file"):
        read_regular(fifo, 10, "thing")
    with pytest.raises(LocalFileError, match="no such file"):
        read_regular(tmp_path / "missing", 10, "thing")
    with pytest.raises(LocalFileError, match="not a regular file"):
        read_regular(tmp_path, 10, "thing")


# ------------------------------------------------- b. check-config as strict as run


@pytest.mark.parametrize(("body", "message"), [
    ("[tls]\nca_file = 'notpem.txt'\n", "[tls] ca_file"),
    ("[tls]\nalpn = ['']\n", "[tls] alpn"),
    (f"[tls]\nalpn = ['{'a' * 256}']\n", "[tls] alpn"),
    ("[tls]\nalpn = [\"h2\\u00e9\"]\n", "[tls] alpn"),
    ("[output]\nprefix = \"kz\\u0000x\"\n", "[output] prefix"),
    ("[output]\nprefix = \"kz\\nx\"\n", "[output] prefix"),
    ("[output]\nprefix = \"kz\\u007fx\"\n", "[output] prefix"),
    (f"[limits]\nconcurrency = {2**63 - 1}\n", "[limits] concurrency"),
    ("[limits]\nrate = 1e300\n", "[limits] rate"),
    ("[timeouts]\nhttp = 1e12\n", "[timeouts] http"),
    (f"[output]\nrotate_bytes = {2**62}\n", "[output] rotate_bytes"),
    (f"[output]\nmax_total_bytes = {2**62}\n", "[output] max_total_bytes"),
    ("[helper]\nallow_nets = ['0.0.0.0/0']\n", "[helper] allow_nets"),
    ("[helper]\nallow_nets = ['::/0']\n", "[helper] allow_nets"),
    ("[helper]\nallow_nets = ['0.0.0.0/4']\n", "[helper] allow_nets"),
])
def test_check_config_rejects_what_run_cannot_use(body: str, message: str,
                                                  tmp_path: Path) -> None:
    """Each of these used to pass check-config (and crash or hang ``run``): now exit 2."""
    (tmp_path / "notpem.txt").write_text("this is not a certificate\n")
    line = _one_line_error(_check(str(_config(tmp_path, body))))
    assert message in line, line


def test_every_number_has_an_upper_bound() -> None:
    """2**62 (or 1e300) for any numeric key of any section is a ConfigError naming the key."""
    from tests.config.test_config_properties import ALL_KEYS

    for name, key in ALL_KEYS:
        for huge in (2**62, 1e300):
            try:
                parse_config({name: {key: huge}}, where="p.toml")
            except ConfigError as exc:
                assert f"[{name}] {key}" in str(exc)
            else:
                pytest.fail(f"[{name}] {key} = {huge} accepted")


async def test_runs_startup_accepts_a_valid_ca_file_and_alpn(tmp_path: Path) -> None:
    """A good PEM bundle and ALPN list: parsed, and the engine builds its contexts from them."""
    import certifi

    ca = tmp_path / "ca.pem"
    await asyncio.to_thread(shutil.copyfile, certifi.where(), ca)
    loaded = parse_config({"tls": {"ca_file": "ca.pem", "alpn": ["h2", "x" * 255]},
                           "analysis": {"worker_process": False}}, where="p.toml", base=tmp_path)
    await build_engine(loaded.config).aclose()  # builds the TLS contexts as ``run`` does


# ------------------------------------------------------ c. accepted but dangerous


def test_wide_allow_nets_warns(tmp_path: Path) -> None:
    """A whole special-purpose /8 opened to the helper: accepted, with a loud warning."""
    loaded = parse_config({"helper": {"allow_nets": ["10.0.0.0/8", "127.0.0.1/32"]}},
                          where="p.toml")
    warnings = [w for w in loaded.warnings if "allow_nets" in w]
    assert len(warnings) == 1 and "10.0.0.0/8" in warnings[0], loaded.warnings


@pytest.mark.parametrize("listen", ["0.0.0.0:9108", "[::]:9108"])
def test_metrics_on_all_addresses_warns_and_strict_fails(listen: str, tmp_path: Path) -> None:
    """Unauthenticated metrics on every address: a warning; under --strict, exit 2."""
    config = _config(tmp_path, f"[service]\nmetrics_listen = '{listen}'\n")
    lenient = _check(str(config))
    assert lenient.returncode == 0, lenient.stderr
    assert "metrics_listen" in lenient.stderr and "every address" in lenient.stderr
    assert _check("--strict", str(config)).returncode == 2
    loopback = _config(tmp_path, "[service]\nmetrics_listen = '127.0.0.1:9108'\n")
    assert _check("--strict", str(loopback)).returncode == 0
