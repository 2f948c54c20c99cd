"""``[network]``: anchors validated as targets, one-line errors naming section and key."""

from __future__ import annotations

from typing import Any

import pytest

from kzprobe.config import ConfigError, parse_config
from kzprobe.config.model import Anchor, NetworkConfig


def network(**values: Any) -> tuple[NetworkConfig, tuple[str, ...]]:
    loaded = parse_config({"network": values}, where="k.toml")
    return loaded.config.network, loaded.warnings


def test_defaults_and_a_full_section() -> None:
    """Absent: no anchors, the dataclass defaults. Given: every key read."""
    assert network()[0] == NetworkConfig()
    got, warnings = network(interval=10, outage_rate=0.25, confirm=3, recover=1, anchors=[
        {"target": "resolvers", "scope": "domestic"},
        {"target": "tls://kaspi.kz:443", "scope": "domestic"},
        {"target": "tcp://1.1.1.1:443", "scope": "international"},
        {"target": "https://www.example.com/", "scope": "international"}])
    assert warnings == ()
    assert (got.interval, got.outage_rate, got.confirm, got.recover) == (10.0, 0.25, 3, 1)
    assert got.anchors[1] == Anchor(target="tls://kaspi.kz:443", scope="domestic")


@pytest.mark.parametrize(("values", "message"), [
    ({"anchors": [{"target": "ftp://x.test/", "scope": "domestic"}]},
     "[network] anchors[1] target: unsupported scheme"),
    ({"anchors": [{"target": "tcp://1.1.1.1", "scope": "domestic"}]},
     "[network] anchors[1] target:"),
    ({"anchors": [{"target": "tcp://1.1.1.1:443", "scope": "abroad"}]},
     "[network] anchors[1] scope: must be domestic or international"),
    ({"anchors": [{"target": "tcp://1.1.1.1:443"}]}, "[network] anchors[1]: expected"),
    ({"anchors": [{"target": "tcp://1.1.1.1:443", "scope": "domestic", "x": 1}]},
     "unknown key 'x'"),
    ({"anchors": [{"target": "resolvers", "scope": "domestic"}] * 2}, "listed twice"),
    ({"outage_rate": 0}, "[network] outage_rate: must be > 0"),
    ({"outage_rate": 1.5}, "[network] outage_rate: must be <= 1"),
    ({"confirm": 0}, "[network] confirm: must be >= 1"),
    ({"interval": 0.01}, "[network] interval: must be >= 0.1"),
    ({"degraded_factor": 0.5}, "[network] degraded_factor: must be > 1"),
    ({"baseline_samples": 2, "baseline_min_samples": 5}, "[network] baseline_min_samples"),
])
def test_bad_values_name_file_section_and_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        network(**values)
    assert str(err.value).startswith("k.toml: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_one_scope_only_is_a_warning() -> None:
    """Without both scopes an international outage cannot be told from a full one."""
    _, warnings = network(anchors=[{"target": "tcp://1.1.1.1:443", "scope": "international"}])
    assert len(warnings) == 1 and "domestic and international" in warnings[0]


def test_resolvers_without_a_named_anchor_is_a_warning() -> None:
    """The resolvers are judged by the anchors' lookups: with only addresses, never."""
    _, warnings = network(anchors=[{"target": "resolvers", "scope": "domestic"},
                                   {"target": "tcp://10.0.0.1:443", "scope": "domestic"},
                                   {"target": "tcp://1.1.1.1:443", "scope": "international"}])
    assert len(warnings) == 1 and "lookups" in warnings[0]
