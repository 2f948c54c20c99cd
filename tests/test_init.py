"""``kzprobe init`` and the config it writes; commands that need a config refuse without one."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from kzprobe.init import SAFE_CHOICES, example_text, initial_config

ROOT = Path(__file__).resolve().parents[1]
KZPROBE = [sys.executable, "-m", "kzprobe"]
NO_CONFIG = "kzprobe: error: no config: run 'kzprobe init' or pass --config FILE"


def _run(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KZPROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, input=stdin)


def _comments(text: str) -> list[str]:
    """Every comment from the first section on (the header is init's own)."""
    body = text[text.index("\n[") + 1:]
    return [line[line.index("#"):] for line in body.splitlines() if "#" in line]


def test_the_packaged_example_is_the_documented_config() -> None:
    """One source of truth: the package's example is config/kzprobe.toml."""
    assert example_text() == (ROOT / "config" / "kzprobe.toml").read_text(encoding="utf-8")


def test_init_applies_the_safe_choices_and_keeps_every_comment() -> None:
    text = initial_config("kzprobe.toml")
    parsed = tomllib.loads(text)
    for section, key, value, _ in SAFE_CHOICES:
        assert parsed[section][key] == tomllib.loads(f"v = {value}")["v"], (section, key)
    assert parsed["output"]["dir"] == "data"  # not /var/lib/kzprobe: writable as any user
    assert parsed["targets"]["files"] == []  # the bundled lists are not in the wheel
    assert _comments(text) == _comments(example_text())
    assert "kzprobe check-config kzprobe.toml" in text


def test_init_writes_refuses_to_overwrite_and_forces(tmp_path: Path) -> None:
    result = _run("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "kzprobe.toml"
    assert written.read_text(encoding="utf-8") == initial_config("kzprobe.toml")
    assert result.stdout.startswith("wrote kzprobe.toml: ")
    assert "kzprobe check-config kzprobe.toml" in result.stdout
    assert "kzprobe run --once" in result.stdout
    written.write_text("# mine\n", encoding="utf-8")
    again = _run("init", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr == ("kzprobe: error: kzprobe.toml: exists; not overwritten "
                            "(--force to replace it)\n")
    assert written.read_text(encoding="utf-8") == "# mine\n"
    assert _run("init", "--force", cwd=tmp_path).returncode == 0
    assert written.read_text(encoding="utf-8") == initial_config("kzprobe.toml")


def test_init_into_a_new_directory_names_it_in_the_next_commands(tmp_path: Path) -> None:
    result = _run("init", "probe/conf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "probe" / "conf" / "kzprobe.toml").is_file()
    assert "--config probe/conf/kzprobe.toml" in result.stdout


def test_an_init_config_with_a_target_passes_strict_check_config(tmp_path: Path) -> None:
    """The written config is valid as it is; only the targets are the user's to add."""
    assert _run("init", cwd=tmp_path).returncode == 0
    path = tmp_path / "kzprobe.toml"
    bare = _run("check-config", "kzprobe.toml", cwd=tmp_path)
    assert bare.returncode == 2 and "no usable targets" in bare.stderr
    text = path.read_text(encoding="utf-8").replace(
        "\nurls = []", '\nurls = ["https://site.test/"]', 1)
    path.write_text(text, encoding="utf-8")
    checked = _run("check-config", "--strict", "kzprobe.toml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "kzprobe.toml: OK, 1 target\n"


@pytest.mark.parametrize("command", [["run", "--once"], ["measure", "https://site.test/"],
                                     ["helper"], ["measure", "-"]])
def test_commands_that_measure_refuse_without_a_config(tmp_path: Path,
                                                       command: list[str]) -> None:
    """No --config and no ./kzprobe.toml: one line, exit 2 (a clone's config/kzprobe.toml,
    the real-internet deployment config, is never picked up by itself)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kzprobe.toml").write_text("[targets]\nurls = ['https://x.test/']\n")
    result = _run(*command, cwd=tmp_path, stdin="https://site.test/\n")
    assert result.returncode == 2
    assert result.stderr == NO_CONFIG + "\n"
    assert result.stdout == ""


def test_a_local_kzprobe_toml_is_the_default_config(tmp_path: Path) -> None:
    """./kzprobe.toml is read without --config (here: its error names it)."""
    (tmp_path / "kzprobe.toml").write_text("[limits]\nrate = -1\n", encoding="utf-8")
    result = _run("measure", "https://site.test/", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "kzprobe: error: kzprobe.toml:2: [limits] rate: must be > 0, got -1\n"


@pytest.mark.slow
def test_the_wheel_carries_the_example_itself(tmp_path: Path) -> None:
    """A built wheel holds the example's text (a file, not the source tree's link)."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT),
                            "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("kzprobe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("kzprobe/data/kzprobe.example.toml")
        assert (info.external_attr >> 16) & 0o170000 == 0o100000  # a regular file
        assert archive.read(info) == (ROOT / "config" / "kzprobe.toml").read_bytes()
