"""The progress line and the tally it draws from."""

from __future__ import annotations

import io

from kzprobe.progress import ProgressLine, Tally, summary_lines


def _record(keys: dict[str, object]) -> dict[str, object]:
    return {"input": "http://a.test/", "probe_asn": "AS1", "test_keys": keys}


def test_tally_counts_states_codes_and_skips() -> None:
    tally = Tally()
    tally.add(_record({"blocking": "dns", "interference": ["dns.nxdomain"], "control": {"x": 1}}))
    tally.add(_record({"blocking": False, "accessible": False}))
    tally.add(_record({"x_skipped": [{"ip": "127.0.0.1", "reason": "loopback"}]}))
    assert tally.state_counts() == {"ok": 0, "blocked": 1, "down": 1, "unknown": 1}
    assert dict(tally.codes) == {"dns.nxdomain": 1}
    assert (tally.no_control, tally.skipped) == (2, 1)
    lines = summary_lines(tally, outputs=["seg.ndjson.gz"], output_dir="out")
    assert lines[0] == "kzprobe: 3 records: 0 ok, 1 blocked, 1 down, 1 unknown"
    assert lines[-1] == "kzprobe: next: kzprobe report out"


def test_progress_line_redraws_and_clears() -> None:
    stream = io.StringIO()
    tally = Tally()
    tally.add(_record({"blocking": "tcp_ip", "interference": ["tcp.reset"]}))
    line = ProgressLine(stream, 5)
    line.update(tally, force=True)
    assert "1/5 measured" in stream.getvalue() and "1 blocked" in stream.getvalue()
    line.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
