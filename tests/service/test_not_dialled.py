"""The daemon says once that it refused to dial an address, and every sweep's
``sweep_finished`` counts the refused addresses of its own records."""

from __future__ import annotations

from pathlib import Path

from tests.service.conftest import StartDaemon
from tests.service.harness import Site, daemon_config, read_segments


async def test_daemon_warns_once_about_refused_addresses(
        tmp_path: Path, site: Site, start_daemon: StartDaemon) -> None:
    out = tmp_path / "out"
    config = daemon_config(tmp_path / "c.toml", urls=[site.url("/a"), site.url("/b")], out=out,
                           analysis={"not_bogon": []}, dns={"resolvers": ["127.0.0.1:1"]})
    daemon = await start_daemon(config)
    second = await daemon.wait_event("sweep_finished", count=2)
    assert await daemon.stop() == 0
    assert site.hits() == 0
    assert len(daemon.events("no_control")) == 1
    warned = daemon.events("address_not_dialled")
    assert len(warned) == 1 and warned[0]["reason"] == "loopback"
    assert second["records"] == 2 and second["addresses_not_dialled"] == 2
    records = read_segments(out)
    assert records and all(r["test_keys"]["x_skipped"][0]["failure"] == "address_not_dialled"
                           for r in records)
