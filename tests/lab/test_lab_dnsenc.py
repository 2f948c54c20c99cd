"""Encrypted DNS through the censored lab: unbound serves DoT (:853) and DoH (:8443, HTTP/2)
on the internet namespace's address, the router blocks, ``kzprobe measure`` in the client
namespace judges. Port 853 dropped: the DoT endpoint is a ``tcp.timeout`` (the helper
connected); the DoH server's name reset: a ``tls.reset`` the benign SNI confirms."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.dnsenc.servers import UNBOUND

from . import faults
from .lab import Lab
from .topology import INTERNET_IP

pytestmark = pytest.mark.lab

NAME = "dns.lab.test"  # on the lab DoT/DoH server's certificate (never resolved)
DOH_PORT = 8443  # 443 of the internet address is the lab's own


def _conf(tmp: Path, cert: Path, key: Path) -> str:
    return f"""server:
    interface: {INTERNET_IP}@853
    interface: {INTERNET_IP}@{DOH_PORT}
    tls-port: 853
    https-port: {DOH_PORT}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: ""
    do-ip6: no
    do-not-query-localhost: yes
    access-control: 198.18.0.0/15 allow
    local-zone: "." refuse
    local-zone: "test." static
    local-data: "answer.test 60 IN A 198.18.2.2"
remote-control:
    control-enable: no
"""


def _listening(lab: Lab) -> bool:
    out = subprocess.run(["ip", "netns", "exec", lab.names.internet, "ss", "-ltnH"],
                         capture_output=True, text=True, check=False).stdout
    return f"{INTERNET_IP}:853" in out and f"{INTERNET_IP}:{DOH_PORT}" in out


@pytest.fixture(scope="module")
def dns_server(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """unbound in the internet namespace; yields a CA bundle trusting it and the lab sites."""
    if UNBOUND is None:
        pytest.skip("unbound is not installed (apt-get install unbound)")
    tmp = tmp_path_factory.mktemp("lab-unbound")
    ca = trustme.CA()
    leaf = ca.issue_cert(NAME)
    leaf.private_key_pem.write_to_path(tmp / "key.pem")
    leaf.cert_chain_pems[0].write_to_path(tmp / "cert.pem")
    (tmp / "unbound.conf").write_text(_conf(tmp, tmp / "cert.pem", tmp / "key.pem"))
    bundle = tmp / "ca-bundle.pem"
    bundle.write_bytes(lab.ca_file.read_bytes() + ca.cert_pem.bytes())
    proc = subprocess.Popen(["ip", "netns", "exec", lab.names.internet, UNBOUND, "-d", "-c",
                             str(tmp / "unbound.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not _listening(lab):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"unbound did not start: {proc.communicate()[1]!r}")
            time.sleep(0.1)
        yield bundle
    finally:
        proc.terminate()
        proc.wait(10)


def _measure(lab: Lab, tmp_path: Path, bundle: Path, uri: str,
             rule: tuple[faults.Rule, ...]) -> dict[str, Any]:
    config = lab.write_config(tmp_path, tls={"ca_file": str(bundle)})
    for fault in rule:
        fault.install(lab)
    try:
        (record,) = lab.measure(uri, config)
    finally:
        for fault in rule:
            fault.remove(lab)
    keys: dict[str, Any] = record["test_keys"]
    return keys


def test_dot_reachable_then_port_853_dropped(lab: Lab, dns_server: Path, tmp_path: Path) -> None:
    uri = f"dot://{INTERNET_IP}:853?sni={NAME}&name=answer.test"
    fine = _measure(lab, tmp_path, dns_server, uri, ())
    assert fine["reachable"] is True, fine
    dropped = _measure(lab, tmp_path, dns_server, uri,
                       (faults.port_syn(INTERNET_IP, 853, ("DROP",)),))
    assert (dropped["failure"], dropped["failed_operation"]) == (
        "generic_timeout_error", "tcp_connect")
    assert dropped["interference"] == ["tcp.timeout"], dropped.get("control")


def test_doh_sni_reset_is_tls_reset(lab: Lab, dns_server: Path, tmp_path: Path) -> None:
    uri = f"doh://{INTERNET_IP}:{DOH_PORT}/dns-query?sni={NAME}&name=answer.test"
    fine = _measure(lab, tmp_path, dns_server, uri, ())
    assert fine["reachable"] is True and fine["x_doh"][0]["addresses"] == [INTERNET_IP], fine
    reset = _measure(lab, tmp_path, dns_server, uri, (faults.string_match(
        DOH_PORT, NAME, ("REJECT", "--reject-with", "tcp-reset")),))
    assert (reset["failure"], reset["failed_operation"]) == ("connection_reset", "tls_handshake")
    assert reset["x_sni_checks"][0]["failure"] is None
    assert reset["interference"] == ["tls.reset"]
