"""HTTP/3 through the censored lab: a site on its own address in the internet namespace
(``web`` over TCP advertising ``Alt-Svc: h3=":443"``, ``h3`` over UDP/443), the router
dropping UDP/443 to it while TCP/443 passes, ``kzprobe measure`` in the client namespace.

The helper (in the internet namespace, behind no censor) fetches over HTTP/3 too, so the
dropped QUIC is ``quic.timeout`` while the HTTPS page stays accessible. The site is set up
by this module only (the lab's web and honest DNS learn it by SIGHUP and forget it after),
so no other lab test sees its Alt-Svc; the drop rule must have matched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import faults, servers, services, topology
from .lab import Lab
from .netns import run

pytestmark = pytest.mark.lab

H3_IP = "198.18.2.90"  # not a topology site: only this module serves (and measures) it
H3_HOST = "h3.lab.test"
URL = f"https://{H3_HOST}/"
TITLE = "Lab HTTP/3 site"
SITE = {"name": H3_HOST, "title": TITLE, "body": "Over QUIC too.",
        "headers": {"Alt-Svc": 'h3=":443"; ma=60'}}


def _reload(lab: Lab, name: str, path: Path, data: Any) -> None:
    """Rewrite a lab server's rules file, SIGHUP it, wait for its "reloaded" line."""
    service = lab.service(name)
    before = service.stderr.read_text(errors="replace").count("reloaded")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    service.signal_hup()
    deadline = time.monotonic() + 10.0
    while service.stderr.read_text(errors="replace").count("reloaded") == before:
        assert time.monotonic() < deadline, f"{name} did not reload:\n{service.log_tail()}"
        time.sleep(0.05)


def _zone(with_h3: bool) -> dict[str, Any]:
    zone = topology.zone()
    zone[servers.REDIRECT_HOPS[1]] = [topology.SITES[1].ip]  # as servers._write_inputs
    if with_h3:
        zone[H3_HOST] = [H3_IP]
    return {"default": "answer", "zone": zone}


@pytest.fixture(scope="module")
def h3_site(lab: Lab) -> Iterator[str]:
    """The address up, the lab's web serving the site (with its Alt-Svc) and the honest DNS
    naming it, and an ``h3`` server on its UDP/443; all undone afterwards."""
    ns, dev, w = lab.names.internet, lab.names.veth("i"), lab.workdir
    assert topology.SITES[1].key == "redirect"
    run(["ip", "-n", ns, "addr", "add", f"{H3_IP}/24", "dev", dev])
    (w / "h3-sites.json").write_text(json.dumps([SITE]), encoding="utf-8")
    quic = services.spawn(ns, "h3_quic", services.simnet_argv("h3", [
        "--host", H3_IP, "--port", "443", "--pki", str(w / "pki"),
        "--sites", str(w / "h3-sites.json")]), w)
    try:
        quic.wait_ready(30.0)
        _reload(lab, "web", w / "sites.json", [*servers.site_specs(), SITE])
        _reload(lab, "auth_dns", w / "auth-dns.json", _zone(True))
        yield URL
    finally:
        quic.stop()
        _reload(lab, "web", w / "sites.json", servers.site_specs())
        _reload(lab, "auth_dns", w / "auth-dns.json", _zone(False))
        run(["ip", "-n", ns, "addr", "del", f"{H3_IP}/24", "dev", dev])


def _measure(lab: Lab, tmp_path: Path) -> dict[str, Any]:
    config = lab.write_config(tmp_path, timeouts={"tls": 2.0})
    (record,) = lab.measure(URL, config)
    return dict(record["test_keys"])


def test_http3_through_the_lab(lab: Lab, h3_site: str, tmp_path: Path) -> None:
    """No fault: the Alt-Svc leads to a QUIC handshake and an HTTP/3 page, control too."""
    keys = _measure(lab, tmp_path)
    (shake,) = keys["quic_handshakes"]
    assert shake["failure"] is None and shake["address"] == f"{H3_IP}:443"
    assert shake["server_name"] == H3_HOST
    h3 = keys["requests"][-1]
    assert h3["network"] == "udp" and h3["response"]["code"] == 200
    assert TITLE in h3["response"]["body"]
    assert keys["control"]["http3_request"]["status_code"] == 200
    assert keys["interference"] == [] and keys["accessible"] is True


def test_udp_443_dropped_while_tcp_works_is_quic_timeout(lab: Lab, h3_site: str,
                                                         tmp_path: Path) -> None:
    """The router drops UDP/443 to the site: quic.timeout, the TCP path fine (accessible)."""
    drop = faults.Scenario("quic_drop", "", "UDP/443 to the site dropped",
                           (faults.udp_drop(H3_IP, 443),))
    drop.install(lab)
    try:
        keys = _measure(lab, tmp_path)
        hits = faults.rule_hits(lab)
    finally:
        drop.remove(lab)
        faults.assert_clean(lab)
    assert hits and hits[0] > 0  # the fault applied
    assert keys["quic_handshakes"][0]["failure"] == "generic_timeout_error"
    assert [r["network"] for r in keys["requests"]] == ["tcp"]
    assert keys["requests"][0]["response"]["code"] == 200
    assert keys["tls_handshakes"][0]["failure"] is None
    assert keys["control"]["http3_request"]["failure"] is None
    assert keys["interference"] == ["quic.timeout"]
    assert keys["blocking"] is False and keys["accessible"] is True
