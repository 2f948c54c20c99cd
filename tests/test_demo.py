"""`kzprobe demo`: the quick-start command sweeps the simulated network end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from kzprobe.demo_run import observed
from kzprobe.storage.segments import iter_records, list_segments

GOLDEN = Path(__file__).parent / "golden" / "demo_summary.json"
# The verdict keys the golden summary pins, per target (OONI's, then kzprobe's).
SUMMARY_KEYS = ("dns_consistency", "body_length_match", "status_code_match", "headers_match",
                "title_match", "blocking", "accessible", "interference",
                "sni_blocking_confirmed", "blockpage", "tls_mitm_issuer", "x_tls_mitm_known",
                "dns_experiment_failure", "http_experiment_failure", "control_failure")


class DemoRun:
    def __init__(self, result: subprocess.CompletedProcess[str], records: list[Any]) -> None:
        self.result = result
        self.records = records
        self.by_host = {r["input"].split("//")[1].split(":")[0]: r["test_keys"] for r in records}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One real `kzprobe demo` run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("demo") / "data"
    result = subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return DemoRun(result, list(iter_records(list_segments([out]))))


def test_demo_writes_one_record_per_target_and_a_summary(demo: DemoRun) -> None:
    """The demo runs the real daemon once: NDJSON on disk, each simulated fault visible."""
    result, records, by_host = demo.result, demo.records, demo.by_host
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


@pytest.mark.parametrize("body", [
    "<HTML><HEAD><TITLE>Доступ ограничен</TITLE></HEAD></HTML>",  # upper-case tags
    {"format": "base64", "data": "PHRpdGxlPkJsb2NrZWQ8L3RpdGxlPv8="},  # not UTF-8: base64
])
def test_summary_line_shows_the_title_the_analysis_compares(body: Any) -> None:
    """The demo's "measured" line quotes the page title as OONI's WebGetTitle (the one the
    title_match verdict uses) extracts it, whatever the tags' case or the body's encoding."""
    keys = {"requests": [{"response": {"code": 200, "body": body}}]}
    expected = {str: "Доступ ограничен", dict: "Blocked"}[type(body)]
    assert observed(keys) == f"HTTP 200 {expected!r}"


def summary(by_host: dict[str, Any]) -> dict[str, Any]:
    """Every target's verdict keys, the TLS failures seen and OONI's body proportion."""
    out: dict[str, Any] = {}
    for host, keys in sorted(by_host.items()):
        row = {key: keys.get(key) for key in SUMMARY_KEYS}
        row["body_proportion"] = round(float(keys.get("body_proportion") or 0.0), 4)
        row["tls_failures"] = sorted({str(s.get("failure")) for s in keys.get("tls_handshakes")
                                      or []})
        row["tcp_failures"] = sorted({str(c.get("status", {}).get("failure"))
                                      for c in keys.get("tcp_connect") or []})
        out[host] = row
    return out


def test_demo_matches_the_golden_summary(demo: DemoRun) -> None:
    """Every target's OONI keys and interference equal the stored summary.

    The summary was recorded from the code before the experiment-shape refactor (issue 15);
    a change of any verdict shows here as a diff. Regenerate only for an intended change:
    ``python tests/test_demo.py > tests/golden/demo_summary.json`` and review the diff.
    """
    expected = orjson.loads(GOLDEN.read_bytes())
    assert summary(demo.by_host) == expected


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "kzprobe", "demo", "--output", str(data)],
                       check=True, capture_output=True, timeout=120)
        hosts = {r["input"].split("//")[1].split(":")[0]: r["test_keys"]
                 for r in iter_records(list_segments([data]))}
        sys.stdout.write(orjson.dumps(summary(hosts), option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS).decode() + "\n")
