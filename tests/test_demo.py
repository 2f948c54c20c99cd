"""`kzprobe demo`: the quick-start command sweeps the simulated network end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from kzprobe.segments import iter_records, list_segments


def test_demo_writes_one_record_per_target_and_a_summary(tmp_path: Path) -> None:
    """The demo runs the real daemon once: NDJSON on disk, each simulated fault visible."""
    result = subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output",
                             str(tmp_path / "data")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    records = list(iter_records(list_segments([tmp_path / "data"])))
    by_host = {r["input"].split("//")[1].split(":")[0]: r["test_keys"] for r in records}
    assert len(records) == len(by_host) >= 10
    assert by_host["news.demo"]["requests"][0]["response"]["code"] == 200
    assert by_host["opposition.demo"]["dns_experiment_failure"] == "dns_nxdomain_error"
    assert by_host["vpn.demo"]["tls_handshakes"][0]["failure"] == "connection_reset"
    assert by_host["media.demo"]["tls_handshakes"][0]["failure"] == "generic_timeout_error"
    assert by_host["social.demo"]["tls_handshakes"][0]["failure"] == "ssl_unknown_authority"
    assert "Страница заблокирована" in by_host["blocked.demo"]["requests"][0]["response"]["body"]
    verdicts = {host: (keys["blocking"], keys["interference"]) for host, keys in by_host.items()}
    assert verdicts == {
        "plain.demo": (False, []),
        "news.demo": (False, []),
        "жаңалықтар.demo": (False, []),
        "opposition.demo": ("dns", ["dns.nxdomain"]),
        "rights.demo": ("dns", ["dns.bogon"]),
        "vpn.demo": ("http-failure", ["tls.reset"]),
        "media.demo": ("http-failure", ["tls.timeout"]),
        "radio.demo": (False, ["throttling"]),
        "blocked.demo": (False, ["http.blockpage"]),  # OONI misses it: same status and headers
        "social.demo": ("http-failure", ["tls.mitm"]),
        "down.demo": (False, []),  # refused for the control too: down, not censored
    }
    assert by_host["social.demo"]["tls_mitm_issuer"] == "Security Certificate"
    assert by_host["vpn.demo"]["sni_blocking_confirmed"] is True
    assert by_host["blocked.demo"]["blockpage"]
    assert "measured:" in result.stdout and "records written" in result.stdout
    assert orjson.loads(result.stderr.splitlines()[-1])["event"] == "stopped"
