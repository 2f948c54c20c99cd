"""Applying the analysis to records: local fingerprints, retries, scrubbing, body policy."""

from __future__ import annotations

import base64
import timeit
from pathlib import Path

import orjson
import pytest

from kzprobe.config import parse_config
from kzprobe.errors import ConfigError
from kzprobe.verdict.analyzer import Analyzer
from kzprobe.verdict.pipeline import (
    MAX_LEARNED,
    Scrubber,
    choose,
    drop_bodies,
    public_ips,
    scrub,
)
from kzprobe.verdict.verdicts import EndpointVerdict, WebVerdict

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
    blocked, fine = WebVerdict("http-failure", ("tls.reset",)), WebVerdict(False, ())
    assert choose([blocked, fine, fine]) == (2, 2)
    assert choose([blocked, blocked, fine]) == (1, 2)
    assert choose([blocked, fine]) == (1, 1)


def test_scrub_replaces_the_public_ip_but_keeps_certificates() -> None:
    """The probe's IP leaves bodies, headers and failures; certificates stay as evidence."""
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
    assert WebVerdict("dns", ("dns.nxdomain",)).keep_bodies("anomalous")
    assert WebVerdict(None, ()).keep_bodies("anomalous")
    assert not WebVerdict(False, ()).keep_bodies("anomalous")
    assert WebVerdict(False, ()).keep_bodies("always")
    assert not WebVerdict("dns", ()).keep_bodies("never")
    keys = {"requests": [{"response": {"body": "hello"}}]}
    drop_bodies(keys)
    response = keys["requests"][0]["response"]
    assert response["body"] == "" and response["x_body_length"] == 5


V6 = "2001:db8::7"


@pytest.mark.parametrize("written", [
    "2001:DB8::7", "2001:db8:0:0:0:0:0:7", "2001:0db8:0000:0000:0000:0000:0000:0007",
    "2001:0DB8::0:7", "2001:db8:0::0:0007", "[2001:db8::7]:443", "2001:db8::0.0.0.7",
])
def test_scrub_matches_every_spelling_of_an_ipv6_address(written: str) -> None:
    """Case, leading zeros, where "::" falls, a dotted tail: one address, always scrubbed."""
    body = base64.b64encode(f"\xff you are {written}.".encode("latin-1")).decode()
    record = {"text": f"You are {written}.", f"x-{written}": "1",
              "blob": {"format": "base64", "data": body}}
    clean = scrub(record, [V6])
    assert written not in str(clean) and "2001" not in str(clean)
    assert clean["text"].startswith("You are ") and "[scrubbed]" in clean["text"]
    assert b"[scrubbed]" in base64.b64decode(clean["blob"]["data"])


@pytest.mark.parametrize("written", ["::ffff:198.51.100.23", "::FFFF:C633:6417",
                                     "0:0:0:0:0:ffff:c633:6417", "[::ffff:c633:6417]:80"])
def test_scrub_matches_ipv4_mapped_forms_of_an_ipv4_address(written: str) -> None:
    """A dual-stack server echoes an IPv4 client as ::ffff:a.b.c.d, or in hex."""
    clean = scrub({"text": f"client={written};"}, ["198.51.100.23"])
    assert clean["text"].startswith("client=") and "[scrubbed]" in clean["text"]
    assert "c633" not in clean["text"].lower() and "198.51" not in clean["text"]


def test_scrub_leaves_other_ipv6_addresses_and_times_alone() -> None:
    """Neighbours of the address, times and hex words are evidence, not the probe."""
    text = "2001:db8::70 2001:db8::8 fe80::7 at 17:33:42, ::1, deadbeef:cafe, a::b::c"
    assert scrub({"t": text}, [V6]) == {"t": text}


def test_scrubber_remembers_the_helper_reported_addresses_across_records() -> None:
    """A record whose control failed is scrubbed with addresses earlier records taught."""
    scrubber = Scrubber(parse_config({}).config)
    assert not scrubber.known
    scrubber.learn({"control": {"x_client_ip": "198.51.100.23"}})
    scrubber.learn({"control": None, "control_failure": "generic_timeout_error"})
    scrubber.learn({"control": {"x_client_ip": "2001:DB8::7"}})
    assert scrubber.known
    failed = {"control": None, "body": "v4 198.51.100.23 v6 2001:db8:0::7"}
    assert scrubber.scrub(failed)["body"] == "v4 [scrubbed] v6 [scrubbed]"


def test_scrubber_memory_is_bounded() -> None:
    """A helper reporting a new address per record cannot grow the needle list forever."""
    scrubber = Scrubber(parse_config({"probe": {"public_ip": "192.0.2.1"}}).config)
    for i in range(MAX_LEARNED * 5):
        scrubber.learn({"control": {"x_client_ip": f"198.51.100.{i}"}})
    kept = [f"198.51.100.{i}" for i in range(MAX_LEARNED * 5)
            if scrubber.scrub({"a": f"<{f'198.51.100.{i}'}>"})["a"] == "<[scrubbed]>"]
    assert kept == [f"198.51.100.{i}" for i in range(MAX_LEARNED * 4, MAX_LEARNED * 5)]
    assert scrubber.scrub({"a": "192.0.2.1"})["a"] == "[scrubbed]"  # configured: always


def test_scrubber_learns_the_ipv4_behind_a_mapped_helper_answer() -> None:
    """A dual-stack helper socket reports an IPv4 client as ::ffff:a.b.c.d."""
    scrubber = Scrubber(parse_config({}).config)
    scrubber.learn({"control": {"x_client_ip": "::ffff:198.51.100.23"}})
    assert scrubber.scrub({"a": "ip 198.51.100.23"})["a"] == "ip [scrubbed]"


def test_scrubber_adopts_what_a_previous_one_learned() -> None:
    """A config reload builds a new pipeline: the addresses learned so far carry over."""
    old = Scrubber(parse_config({}).config)
    old.learn({"control": {"x_client_ip": "198.51.100.23"}})
    new = Scrubber(parse_config({}).config)
    new.adopt(old)
    assert new.scrub({"a": "198.51.100.23"})["a"] == "[scrubbed]"


def test_public_ip_accepts_a_list_and_validates_each() -> None:
    """A dual-stack VPS has two public addresses; each must be an IP address."""
    config = parse_config({"probe": {"public_ip": ["198.51.100.23", "2001:DB8::7"]}}).config
    assert Scrubber(config).scrub({"a": "198.51.100.23 2001:db8::7"})["a"] == (
        "[scrubbed] [scrubbed]")
    assert parse_config({"probe": {"public_ip": "198.51.100.23"}}).config.probe.public_ip == (
        "198.51.100.23",)
    with pytest.raises(ConfigError, match=r"public_ip.*not an IP address: 'nope'"):
        parse_config({"probe": {"public_ip": ["198.51.100.23", "nope"]}})
    with pytest.raises(ConfigError, match="public_ip"):
        parse_config({"probe": {"public_ip": [1]}})



@pytest.mark.parametrize("unit", ["a::b ", "{i:x}::{j} ", "ffff:{i:x}::1 ", "2001:{i:x}::{j} ",
                                  "2001:db8::{i:x} ", "::ffff:c633:{i:x} "])
def test_scrubbing_a_page_full_of_ipv6_lookalikes_stays_fast(unit: str) -> None:
    """A 512 KiB page of address-like tokens (ours among them) is scrubbed in bounded time:
    the scan runs on the measuring loop, where a stall delays every other measurement.
    Near misses of the address itself (a site knows its client) past MAX_PARSES are
    scrubbed unparsed: privacy over evidence on a page crafted against the probe."""
    tokens = [unit.format(i=i, j=i % 9) for i in range(120_000)]
    page = "".join(tokens)[: 512 * 1024 - 20] + " 2001:DB8::7 "
    prose = ("lorem ipsum dolor sit amet 12:30 " * 20_000)[: 512 * 1024 - 20] + " 2001:DB8::7 "
    needles = ["198.51.100.23", V6]
    assert scrub({"body": page}, needles)["body"].endswith(" [scrubbed] ")

    def cost(text: str) -> float:
        return min(timeit.repeat(lambda: scrub({"body": text}, needles), number=1, repeat=3))

    # A same-run ratio, not seconds (these machines are noisy): the worst units cost ~50x a
    # page of prose of the same size; the per-candidate scan this bounds cost 200-500x.
    assert cost(page) < 150 * cost(prose)


def test_scrub_matches_an_address_that_ends_in_a_double_colon() -> None:
    """``2001:db8:1::`` at the end of a sentence: the trailing ``::`` is the address's own."""
    clean = scrub({"a": "You are 2001:DB8:1::. Or 2001:db8:1:0:0:0:0:0:443"}, ["2001:db8:1::"])
    assert clean == {"a": "You are [scrubbed]. Or [scrubbed]:443"}


def test_scrubbing_a_page_with_css_pseudo_elements_stays_cheap() -> None:
    """``a::before`` looks like IPv6 (``a::b``) and is on most pages: a 50 KB page holding
    it costs a scrub of the same order as one without it, not a character-by-character scan."""
    rows = "".join(f'<li style="margin: 0 {i}px"><a href="https://cdn.news.test/{i}.html">'
                   f"Story {i} at 12:{i % 60:02d}:07</a></li>\n" for i in range(500))
    plain = f"<html><body><ul>{rows}</ul></body></html>"
    css = f"<style>a::before{{content:''}} p::after{{color:red}}</style>{plain}You are 2001:DB8::7"
    needles = ["198.51.100.23", V6]
    assert scrub({"b": css}, needles)["b"].endswith("</html>You are [scrubbed]")

    def cost(text: str) -> float:
        return min(timeit.repeat(lambda: scrub({"b": text}, needles), number=20, repeat=5))

    assert cost(css) < 5 * cost(plain)


@pytest.mark.parametrize("prefix", ["", "İstanbul ", "ß ", "a::before 2001, " * 70])
def test_ipv6_scrub_finds_the_address_whatever_surrounds_it(prefix: str) -> None:
    """Characters whose lower case is longer, or more signature hits than are looked at one
    by one: the address is still found, and its neighbours are kept."""
    text = f"{prefix}2001:db8::7 near 2001:db8::70 [2001:0DB8::7]:443 2001:db8::7."
    clean = scrub({"t": text}, [V6])["t"]
    assert clean == f"{prefix}[scrubbed] near 2001:db8::70 [[scrubbed]]:443 [scrubbed]."


def test_verdicts_are_typed_per_kind_with_one_identity() -> None:
    """A web verdict carries OONI's blocking, an endpoint verdict its failure (False when
    reachable); both compare, retry and cross the worker's wire as [blocking, codes]."""
    from kzprobe.verdict import verdicts

    reachable, refused = EndpointVerdict(False, ()), EndpointVerdict("connection_refused", ())
    assert not reachable.looks_blocked() and refused.looks_blocked()
    assert not EndpointVerdict(None, ()).looks_blocked()  # not judged: nothing to retry
    assert EndpointVerdict(False, ("tcp.reset",)).looks_blocked()
    assert not reachable.keep_bodies("anomalous") and refused.keep_bodies("anomalous")
    assert WebVerdict("dns", ()).looks_blocked() and not WebVerdict(None, ()).looks_blocked()
    assert refused.as_attempt() == {"blocking": "connection_refused", "interference": []}
    for test_name, verdict in (("tcpconnect", EndpointVerdict("generic_timeout_error",
                                                              ("tcp.timeout",))),
                               ("web_connectivity", WebVerdict("tcp_ip", ("tcp.reset",)))):
        wire = orjson.loads(orjson.dumps(verdict.wire()))
        assert verdicts.from_wire(test_name, wire) == verdict
    assert verdicts.unjudged("tor") == EndpointVerdict()
    assert verdicts.unjudged("web_connectivity") == WebVerdict()
    assert WebVerdict(False, ()) != EndpointVerdict(False, ())  # kinds never mix up
