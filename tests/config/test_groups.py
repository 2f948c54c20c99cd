"""[[targets.groups]]: watchlists with their own interval, validated at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzprobe.config import DEFAULT_GROUP, ConfigError, load_config
from kzprobe.ops.groups import load_group_targets, sweep_groups

GROUPS = """
[schedule]
interval = 3600
jitter = 0.2
[targets]
urls = ["http://a.test/", "http://both.test/"]
[[targets.groups]]
name = "watch"
interval = 60
urls = ["http://w.test/", "http://both.test/"]
[[targets.groups]]
name = "slow"
interval = 600
jitter = 0
files = ["list.csv"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "k.toml"
    path.write_text(text, encoding="utf-8")
    header = "url,category_code,category_description,date_added,source,notes\n"
    (tmp_path / "list.csv").write_text(header + "http://l.test/,NEWS,News,2024-01-01,,\n",
                                       encoding="utf-8")
    return path


def test_groups_load_with_their_schedules_and_tagged_targets(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, GROUPS))
    assert loaded.warnings == ()
    config = loaded.config
    assert [g.name for g in config.targets.groups] == ["watch", "slow"]
    targets, warnings = load_group_targets(config)
    assert warnings == []
    groups = {g.name: g for g in sweep_groups(config, targets)}
    assert list(groups) == [DEFAULT_GROUP, "watch", "slow"]
    assert (groups["default"].interval, groups["default"].jitter) == (3600, 0.2)
    assert (groups["watch"].interval, groups["watch"].jitter) == (60, 0.2)  # [schedule]'s
    assert (groups["slow"].interval, groups["slow"].jitter) == (600, 0)
    assert [t.input for t in groups["watch"].targets] == ["http://w.test/", "http://both.test/"]
    assert {t.group for t in groups["watch"].targets} == {"watch"}
    assert [(t.input, t.category_code) for t in groups["slow"].targets] == [
        ("http://l.test/", "NEWS")]
    assert "http://both.test/" in [t.input for t in groups["default"].targets]


def test_an_empty_default_group_is_not_swept(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GROUPS.replace(
        'urls = ["http://a.test/", "http://both.test/"]', ""))).config
    targets, _ = load_group_targets(config)
    assert [g.name for g in sweep_groups(config, targets)] == ["watch", "slow"]


@pytest.mark.parametrize(("table", "message"), [
    ('interval = 60\nurls = ["http://w.test/"]', r"\[targets\] groups\[1\] name: every group"),
    ('name = "default"\nurls = ["http://w.test/"]', r"groups\[1\] name: expected 1-32"),
    ('name = "a b"\nurls = ["http://w.test/"]', r"groups\[1\] name: expected 1-32"),
    ('name = "w"', r"groups\[1\] urls: group 'w' has neither urls nor files"),
    ('name = "w"\ninterval = 0\nurls = ["http://w.test/"]', r"groups\[1\] interval: must be >"),
    ('name = "w"\njitter = 1.5\nurls = ["http://w.test/"]', r"groups\[1\] jitter: must be"),
])
def test_bad_groups_are_one_line_errors_naming_the_entry(tmp_path: Path, table: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(_write(tmp_path, f"[[targets.groups]]\n{table}\n"))
    assert "\n" not in str(caught.value)


def test_a_group_name_used_twice_is_an_error(tmp_path: Path) -> None:
    entry = '[[targets.groups]]\nname = "w"\nurls = ["http://w.test/"]\n'
    with pytest.raises(ConfigError, match=r"groups\[2\] name: group 'w' is defined twice"):
        load_config(_write(tmp_path, entry * 2))


def test_an_unknown_key_in_a_group_is_a_warning_naming_it(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, '[[targets.groups]]\nname = "w"\n'
                                          'urls = ["http://w.test/"]\nintervall = 5\n'))
    assert any("[targets] groups[1] unknown key 'intervall'" in w for w in loaded.warnings)


def test_a_group_may_cap_its_bodies(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, '[[targets.groups]]\nname = "w"\nbody_bytes = 4096\n'
                                          'urls = ["http://w.test/"]\n'))
    targets, _ = load_group_targets(loaded.config)
    assert [(t.group, t.body_bytes) for t in targets] == [("w", 4096)]
    with pytest.raises(ConfigError, match=r"groups\[1\] body_bytes: must be from 1024"):
        load_config(_write(tmp_path, '[[targets.groups]]\nname = "w"\nbody_bytes = 10\n'
                                     'urls = ["http://w.test/"]\n'))
