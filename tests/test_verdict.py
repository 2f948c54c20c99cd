"""Applying the analysis to records: local fingerprints, retries, scrubbing, body policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzprobe.config import parse_config
from kzprobe.errors import ConfigError
from kzprobe.verdict import Analyzer, choose, drop_bodies, keep_bodies, public_ips, scrub

HEADER = ("name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
          "expected_countries,source,exp_url,notes\n")


def _dns_record(answer: str) -> dict[str, object]:
    return {
        "queries": [{"hostname": "news.test", "query_type": "A", "engine": "udp",
                     "resolver_address": "198.18.1.1:53", "failure": None, "t0": 0, "t": 0.01,
                     "answers": [{"answer_type": "A", "ipv4": answer}],
                     "tags": ["depth=0", "classic"]}],
        "tcp_connect": [], "tls_handshakes": [], "requests": [],
        "control": {"dns": {"failure": None, "addrs": ["203.0.113.10"]}, "tcp_connect": {},
                    "http_request": {"status_code": 200, "body_length": 100, "failure": None,
                                     "title": "", "headers": {}}},
        "control_failure": None,
    }


def test_local_fingerprint_file_names_a_dns_blockpage(tmp_path: Path) -> None:
    """[analysis] fingerprint_files adds an ISP's blockpage address to the bundled sets."""
    local = tmp_path / "local.csv"
    local.write_text(HEADER + "local.kz_isp,isp,,dns,full,198.18.1.80,5,KZ,local,,\n")
    config = parse_config({"analysis": {"fingerprint_files": ["local.csv"]}},
                          base=tmp_path).config
    keys = _dns_record("198.18.1.80")
    Analyzer(config).apply(keys, "https://news.test/")
    assert "dns.blockpage" in keys["interference"]
    assert keys["blockpage"] == "local.kz_isp"
    plain = _dns_record("198.18.1.80")
    Analyzer(parse_config({}).config).apply(plain, "https://news.test/")
    assert "dns.blockpage" not in plain["interference"]


def test_missing_fingerprint_file_is_a_config_error(tmp_path: Path) -> None:
    """A fingerprint file that does not exist is named in a ConfigError."""
    with pytest.raises(ConfigError, match="fingerprint_files: no such file"):
        parse_config({"analysis": {"fingerprint_files": ["nope.csv"]}}, base=tmp_path)


def test_choose_prefers_the_majority_then_the_latest() -> None:
    """Retries: the verdict most attempts share wins; on a tie, the latest attempt."""
    blocked, fine = ("http-failure", ("tls.reset",)), (False, ())
    assert choose([blocked, fine, fine]) == (2, 2)
    assert choose([blocked, blocked, fine]) == (1, 2)
    assert choose([blocked, fine]) == (1, 1)


def test_scrub_replaces_the_public_ip_but_keeps_certificates() -> None:
    """The probe's IP leaves bodies, headers and failures; certificates stay as evidence."""
    import base64

    body = base64.b64encode(b"\xffyour ip is 198.51.100.23").decode()
    record = {"a": "seen 198.51.100.23", "b": [{"format": "base64", "data": body}],
              "peer_certificates": [{"format": "base64", "data": "MTk4LjUxLjEwMC4yMw=="}]}
    clean = scrub(record, ["198.51.100.23"])
    assert clean["a"] == "seen [scrubbed]"
    assert base64.b64decode(clean["b"][0]["data"]) == b"\xffyour ip is [scrubbed]"
    assert clean["peer_certificates"] == record["peer_certificates"]


def test_loopback_is_never_taken_for_the_public_ip() -> None:
    """A helper seeing 127.0.0.1 (a local test) must not scrub every local address."""
    config = parse_config({"probe": {"public_ip": "198.51.100.23"}}).config
    keys = {"control": {"x_client_ip": "127.0.0.1"}}
    assert public_ips(config, keys) == ["198.51.100.23"]


def test_body_policy() -> None:
    """store_bodies: anomalous keeps bodies only for not-plainly-fine verdicts."""
    assert keep_bodies("anomalous", ("dns", ("dns.nxdomain",)))
    assert keep_bodies("anomalous", (None, ()))
    assert not keep_bodies("anomalous", (False, ()))
    assert keep_bodies("always", (False, ())) and not keep_bodies("never", ("dns", ()))
    keys = {"requests": [{"response": {"body": "hello"}}]}
    drop_bodies(keys)
    response = keys["requests"][0]["response"]
    assert response["body"] == "" and response["x_body_length"] == 5
