"""The lab's servers: ``kzprobe.simnet`` components started inside the namespaces.

internet namespace: authoritative DNS on 198.18.2.2:53; one ``web`` process on 0.0.0.0:80/443
serving every site by Host/SNI, each site on its own address (certificates from the public CA).
router (the ISP): the ISP resolver on 198.18.1.1:53 (forwards to the authoritative one unless a
scenario says otherwise), the ``sni-filter`` relay (FIN, delay, throttle), the ``blockpage``
server (DNS-redirect target) and transparent proxy, a second blockpage proxy serving a
page no fingerprint knows (``http_diff``), the ``mitm`` box, and an honest
transparent proxy for the ``dns_proxy`` scenario. Boxes on the router only see traffic a
scenario DNATs to them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import faults, netns, services, tomlw, topology
from .netns import LAB_NET, LabError, iptables
from .topology import (
    ENDPOINTS,
    HELPER_IP,
    INTERNET_IP,
    ROUTER_CLIENT_IP,
    SITES,
    Names,
    Site,
)

if TYPE_CHECKING:
    from .lab import Lab

FILTER_PORT = 9400
MITM_PORT = 9443
BLOCKPAGE_PROXY_PORT = 9480
DIFF_PROXY_PORT = 9481
LARGE_SIZE = 2 * 1024 * 1024  # bigger than kzprobe's default body cap (512 KiB)
THROTTLED_SIZE = 80 * 1024  # body of the throttled site: 2.5 s at faults.THROTTLE_RATE
CLOSED_PORT = 8443  # nothing listens on it anywhere in the lab
REDIRECT_HOPS = ("hops.lab.test", "hop-two.lab.test")  # -> open.lab.test
NEED_PKI = ("web", "mitm")
# The http_diff scenario's page: an ISP notice that no fingerprint knows (checked in
# test_lab_checks), served with a status the real site never sends.
RESTRICTED_PHRASE = "Access to this resource is restricted"
RESTRICTED_STATUS = 403
RESTRICTED_HTML = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Notice</title></head>
<body><p>{RESTRICTED_PHRASE}.</p></body></html>
"""
# What real pages send besides the page: ~3 KB of headers (policy, cookies, tracing). They
# make the control's THResponse (which carries the helper's fetched headers) several TCP
# segments long, as it is on the internet; a one-segment read of it fails (tests/lab/
# test_lab_shaped.py).
REALISTIC_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; " + "; ".join(
        f"script-src-elem https://static{i}.cdn.lab.test/assets/js/" for i in range(16)),
    "Permissions-Policy": ", ".join(f"feature-{i}=()" for i in range(30)),
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains; preload",
    "Set-Cookie": "session=" + "5f2b9c" * 40 + "; Path=/; Secure; HttpOnly; SameSite=Lax",
    "Link": ", ".join(f"<https://static.cdn.lab.test/assets/bundle-{i}.css>; rel=preload; "
                      "as=style" for i in range(8)),
    "Server-Timing": ", ".join(f"edge{i};dur={i}.{i}" for i in range(20)),
    "Report-To": '{"group":"default","max_age":31536000,"endpoints":[{"url":'
                 '"https://reports.lab.test/r"}]}',
    "X-Request-Id": "0123456789abcdef" * 4,
    "Cache-Control": "private, no-cache, no-store, must-revalidate, max-age=0",
}
READY_TIMEOUT = 30.0  # generous: ten Python servers start at once on two cores


@dataclass(frozen=True, slots=True)
class Pki:
    """Files written by ``python -m kzprobe.simnet pki``."""

    dir: Path
    public_ca: Path
    qaznet_root: Path


def write_resolv_confs(names: Names) -> None:
    """Per-namespace /etc/resolv.conf (``ip netns exec`` bind-mounts /etc/netns/NS/*).

    The client asks the ISP resolver (the "system resolver" path of kzprobe); the router and
    internet hosts ask the authoritative server, so nothing in the lab ever consults the
    host's resolver.
    """
    confs = {names.client: ROUTER_CLIENT_IP, names.router: INTERNET_IP,
             names.internet: INTERNET_IP}
    for ns, server in confs.items():
        directory = netns.NETNS_ETC / ns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(
            f"# kzprobe lab {ns}\nnameserver {server}\noptions timeout:1 attempts:1\n")


def start_all(lab: Lab) -> None:
    """Start every server in parallel (those needing certificates once ``pki`` is done)."""
    _write_inputs(lab)
    pki = services.spawn(lab.names.internet, "pki",
                         _argv("pki", ["--dir", str(lab.workdir / "pki")]), lab.workdir)
    plan = _plan(lab)
    _spawn(lab, [p for p in plan if p[0] not in NEED_PKI])
    ready = pki.wait_ready(READY_TIMEOUT)
    pki.stop()
    lab.pki = Pki(lab.workdir / "pki", Path(ready["ca_file"]), Path(ready["qaznet_root"]))
    _spawn(lab, [p for p in plan if p[0] in NEED_PKI])
    for service in lab.services.values():
        service.wait_ready(READY_TIMEOUT)
    _internet_rules(lab)
    lab.netem = faults.netem_available(lab.names.router)
    start_helper(lab)


HELPER_PORT = 8765
HELPER_NOT_WIRED = ("KeyError: 'helper'", "invalid choice: 'helper'")


def helper_sections(lab: Lab, listen: str) -> dict[str, dict[str, Any]]:
    """The lab helper's config: the honest resolver, lab addresses only."""
    return {
        "dns": {"resolvers": [INTERNET_IP]},
        "tls": {"ca_file": str(lab.ca_file)},
        "timeouts": {"dns": 2.0, "connect": 1.5, "tls": 1.5, "http": 3.0},
        "helper": {"listen": listen, "allow_nets": [LAB_NET], "rate_per_client": 100.0,
                   "rate_burst": 100, "deadline": 10.0,
                   # a lab address, reached only inside the lab's namespaces
                   "allow_anonymous": True,
                   # 853: the encrypted-DNS lab tests' DoT server (test_lab_dnsenc.py)
                   "allowed_ports": sorted({80, 443, 853, CLOSED_PORT}
                                           | {e.port for e in ENDPOINTS})},
    }


def start_helper(lab: Lab) -> None:
    """``kzprobe helper`` in the internet namespace: honest DNS, dials only lab addresses.

    While the CLI does not run ``helper`` yet, the lab runs without a control
    (``lab.control_url`` None, the reason in ``lab.control_missing``); any other failure
    to start is an error.
    """
    config = lab.workdir / "helper.toml"
    listen = f"{HELPER_IP}:{HELPER_PORT}"
    config.write_text(tomlw.dumps(helper_sections(lab, listen)), encoding="utf-8")
    argv = [sys.executable, "-m", "kzprobe", "helper", "--config", str(config)]
    service = services.spawn(lab.names.internet, "helper", argv, lab.workdir,
                             stderr_marker='"helper_listening"')
    try:
        service.wait_ready(READY_TIMEOUT)
    except LabError:
        tail = service.log_tail()
        if not any(marker in tail for marker in HELPER_NOT_WIRED):
            raise
        lab.control_missing = "`kzprobe helper` is not wired into kzprobe/cli/ yet"
        return
    lab.services["helper"] = service
    lab.control_url = f"http://{listen}/"


def _spawn(lab: Lab, plan: list[tuple[str, str, str, list[str]]]) -> None:
    for name, ns, component, args in plan:
        lab.services[name] = services.spawn(ns, name, _argv(component, args), lab.workdir)


def _argv(component: str, args: list[str]) -> list[str]:
    return services.simnet_argv(component, args)


def _plan(lab: Lab) -> list[tuple[str, str, str, list[str]]]:
    """(service name, namespace, component, arguments) for every long-running server."""
    n, w, proxied = lab.names, lab.workdir, lab.sites["proxied"].ip
    router = ROUTER_CLIENT_IP
    return [
        ("auth_dns", n.internet, "dns", ["--listen", f"{INTERNET_IP}:53",
                                         "--rules", str(w / "auth-dns.json")]),
        ("web", n.internet, "web", ["--host", "0.0.0.0", "--pki", str(w / "pki"),
                                    "--sites", str(w / "sites.json")]),
        ("isp_dns", n.router, "dns", ["--listen", f"{router}:53", "--resolver",
                                      "--default", lab.isp_default,
                                      "--rules", str(lab.isp_rules_path)]),
        ("filter", n.router, "sni-filter", ["--listen", f"{router}:{FILTER_PORT}",
                                            "--upstream", "original",
                                            "--rules", str(w / "filter.json")]),
        ("blockpage_server", n.router, "blockpage", ["--listen", f"{lab.blockpage_ip}:80",
                                                     "--upstream", "none", "--block-all"]),
        ("blockpage_proxy", n.router, "blockpage",
         ["--listen", f"{router}:{BLOCKPAGE_PROXY_PORT}", "--upstream", "original",
          "--block", lab.sites["http_blockpage"].ascii_host]),
        ("diff_proxy", n.router, "blockpage",
         ["--listen", f"{router}:{DIFF_PROXY_PORT}", "--upstream", "original",
          "--block", lab.sites["http_diff"].ascii_host, "--html", str(w / "restricted.html"),
          "--status", str(RESTRICTED_STATUS)]),
        ("mitm", n.router, "mitm", ["--listen", f"{router}:{MITM_PORT}", "--upstream",
                                    "original", "--pki", str(w / "pki")]),
        ("proxy_http", n.router, "sni-filter", ["--listen", f"{lab.proxy_ip}:80",
                                                "--upstream", f"{proxied}:80"]),
        ("proxy_https", n.router, "sni-filter", ["--listen", f"{lab.proxy_ip}:443",
                                                 "--upstream", f"{proxied}:443",
                                                 "--rules", str(lab.proxy_rules_path)]),
    ]


def _write_inputs(lab: Lab) -> None:
    """Zone, sites, relay rules and (empty) ISP rules files the servers read."""
    w = lab.workdir
    zone = topology.zone()
    zone[REDIRECT_HOPS[1]] = [lab.sites["redirect"].ip]
    _dump(w / "auth-dns.json", {"default": "answer", "zone": zone})
    _dump(w / "sites.json", site_specs())
    _dump(w / "filter.json", {"default": "pass", "rules": faults.relay_rules(lab)})
    _dump(lab.isp_rules_path, {"default": lab.isp_default, "rules": {}})
    _dump(lab.proxy_rules_path, {"default": "pass", "rules": {}})
    (w / "restricted.html").write_text(RESTRICTED_HTML, encoding="utf-8")


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def site_specs() -> list[dict[str, Any]]:
    """The ``web`` sites file: one page per lab site, plus the special kinds."""
    specs = [_spec(site) for site in SITES]
    specs.append({"name": REDIRECT_HOPS[1], "kind": "redirect", "redirect_to": "open.lab.test"})
    return specs


def _spec(site: Site) -> dict[str, Any]:
    special: dict[str, dict[str, Any]] = {
        "redirect": {"kind": "redirect", "redirect_to": REDIRECT_HOPS[1]},
        "large": {"kind": "large", "size": LARGE_SIZE},
        "throttle": {"kind": "large", "size": THROTTLED_SIZE},
        "echo": {"kind": "echo"},
    }
    base = {"name": site.host, "kind": "page", "title": page_title(site),
            "body": f"The {site.key} site of the kzprobe lab.",
            "headers": {"X-Lab-Site": site.key, **REALISTIC_HEADERS}}
    base.update(special.get(site.key, {}))
    if base["kind"] != "page":
        base.pop("title"), base.pop("body")
    return base


def page_title(site: Site) -> str:
    """The <title> of a site's real page (tests compare it with what the client got)."""
    return f"Lab site {site.key} news portal"


def _internet_rules(lab: Lab) -> None:
    """The ``down`` site is down for everyone: its address drops everything, at the server."""
    iptables(lab.names.internet, "-A", "INPUT", "-d", lab.sites["down"].ip, "-j", "DROP")
