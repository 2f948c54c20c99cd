"""The status grid's rules without a browser: bin widths from the span, mechanism families,
a cell's state by precedence."""

from __future__ import annotations

import pytest

from kzprobe.report.grid import bin_seconds, cell_state, family


@pytest.mark.parametrize(("first", "last", "typical", "step"), [
    ("2026-12-07 10:00:00", "2026-12-07 11:00:00", 61, 60),  # an hour, every minute
    ("2026-12-07 10:00:00", "2026-12-07 11:00:00", 13, 300),  # an hour, every 5 minutes
    ("2026-12-07 00:00:00", "2026-12-09 00:00:00", 577, 1800),  # two days: <= 120 columns
    ("2026-11-08 00:00:00", "2026-12-07 00:00:00", 8353, 21600),  # 29 days
    ("2026-11-07 00:00:00", "2026-12-07 00:00:00", 8641, 43200),  # 30 days: 121 columns in 6 h
    ("2025-12-07 00:00:00", "2026-12-07 00:00:00", 2, 86400),  # a year: a day, the widest
    ("2026-12-07 10:00:00", "2026-12-07 10:00:00", 1, 60),  # one instant
])
def test_bins_cover_the_span_in_at_most_120_columns(first: str, last: str, typical: float,
                                                    step: int) -> None:
    """The smallest step that fits the span in 120 columns, not finer than the sweeps."""
    assert bin_seconds(first, last, typical) == step


@pytest.mark.parametrize(("mechanism", "name"), [
    ("dns.nxdomain", "dns"), ("dns.nxdomain+tls.timeout", "dns"), ("ooni.dns", "dns"),
    ("tcp.reset", "tcp"), ("ooni.tcp_ip", "tcp"), ("tls.timeout", "tls"),
    ("tls.mitm+tls.timeout", "mitm"), ("http.blockpage+tls.timeout", "blockpage"),
    ("dns.blockpage", "blockpage"), ("http.reset", "http"), ("ooni.http-failure", "http"),
    ("openvpn.handshake_timeout", "other"), (None, "other"),
])
def test_mechanism_family_is_the_most_specific_code(mechanism: str | None, name: str) -> None:
    """A blockpage or an intercepting certificate outranks the timeout beside it."""
    assert family(mechanism) == name


def test_cell_state_precedence() -> None:
    """Blocked beats ok beats down; only outage records is an outage; else no verdict."""
    def cell(**kw: int) -> dict[str, object]:
        counts = {"blocked": 0, "accessible": 0, "down": 0, "outage": 0} | kw
        return {"measurements": sum(counts.values()) + 1, "mechanism": "tls.reset"} | counts

    assert cell_state(cell(blocked=1, accessible=5, down=1)) == "blocked.tls"
    assert cell_state(cell(accessible=1, down=3)) == "ok"
    assert cell_state(cell(down=1)) == "down"
    assert cell_state(cell(outage=2) | {"measurements": 2}) == "outage"
    assert cell_state(cell()) == "unknown"
