"""deploy/prometheus: the shipped rules, their unit tests and the example configs are valid
for the real tools (promtool, amtool)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.tools import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _run(*argv: str) -> str:
    done = subprocess.run(argv, cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    tools = require("promtool")
    assert "SUCCESS: 6 rules found" in _run(tools["promtool"], "check", "rules", "rules.yml")
    assert "SUCCESS" in _run(tools["promtool"], "test", "rules", "rules_test.yml")


def test_a_broken_expectation_fails_the_rule_tests(tmp_path: Path) -> None:
    """The rule tests can fail: the same tests against a rule that never fires."""
    tools = require("promtool")
    rules = (DEPLOY / "rules.yml").read_text(encoding="utf-8")
    (tmp_path / "rules.yml").write_text(rules.replace('state="blocked", group!="default"',
                                                      'state="nonexistent"'), encoding="utf-8")
    (tmp_path / "t.yml").write_text((DEPLOY / "rules_test.yml").read_text(encoding="utf-8"),
                                    encoding="utf-8")
    done = subprocess.run([tools["promtool"], "test", "rules", "t.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "KzprobeWatchlistTargetBlocked" in done.stdout + done.stderr


def test_example_configs_are_valid() -> None:
    tools = require("promtool", "amtool")
    _run(tools["promtool"], "check", "config", "prometheus.yml")
    _run(tools["amtool"], "check-config", "alertmanager.yml")
