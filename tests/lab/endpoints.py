"""Real endpoint daemons in the lab's internet namespace, each on its own 198.18.2.x address.

Started once per session (the ``lab_endpoints`` fixture), in parallel, as :class:`Service`\\ s
(pid-tracked: stopped by the fixture, and by ``Lab.close`` or the namespace's deletion if
that fails). Configs are those of ``tests/endpoints/daemons.py`` with the listen address
moved from 127.0.0.1 to the endpoint's own address:

* ``openvpn`` server, UDP and TCP: TUN device in the namespace, no address or route.
* ``tor``: a private bridge relay (``PublishServerDescriptor 0``, ``UseDefaultFallbackDirs 0``,
  one dummy directory authority at 127.0.0.1:9, the namespace's own loopback, where nothing
  listens). Besides those safeguards, the namespace has no route out of 198.18.0.0/15 and its
  egress guard rejects and counts anything else: the session fails if tor ever tried.
* ``obfs4proxy``: an obfs4 bridge (managed pluggable transport, fresh identity) whose OR port
  is the lab relay's, as a real bridge fronts its tor; only when ``topology.ENDPOINTS`` has
  an ``obfs4`` endpoint.
* ``turnserver`` (coturn): STUN only, no TLS/DTLS, no CLI.
* ``wireguard-go`` + ``wg``: one registered peer, whose private key the client uses.
* ``kzprobe.simnet web`` on chat.lab.test: plain TCP on 5222 (``tcp://``), TLS on 5223.

A missing binary does not stop the others: its endpoints are listed in ``missing`` with the
apt package to install, and their tests skip (fail under ``CI=true``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trustme

from tests.endpoints import daemons

from . import netns, services
from .netns import LabError
from .services import Service
from .topology import ENDPOINTS, Endpoint

if TYPE_CHECKING:
    from .lab import Lab

READY_TIMEOUT = 30.0
WG_SOCKET_DIR = Path("/var/run/wireguard")
TOR_SAFEGUARDS = ("PublishServerDescriptor 0", "UseDefaultFallbackDirs 0", "SocksPort 0",
                  "ControlPort 0", "ExitRelay 0", "127.0.0.1:9 ")


@dataclass(slots=True)
class Daemon:
    """One started daemon and the check that says it serves."""

    service: Service
    ready: Callable[[], bool]
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0


@dataclass(slots=True)
class EndpointServers:
    """What runs for the endpoint tests; ``missing``: endpoint key -> why it does not."""

    by_key: dict[str, Endpoint]
    missing: dict[str, str] = field(default_factory=dict)
    running: dict[str, Daemon] = field(default_factory=dict)
    tor_fingerprint: str = ""
    wg_public_key: str = ""
    wg_client_key: Path | None = None  # the registered peer's private key (client side)
    wg_socket: Path | None = None
    obfs4_cert: str = ""

    def endpoint(self, key: str) -> Endpoint:
        return self.by_key[key]

    def uri(self, key: str) -> str:
        """The URI the tests measure for an endpoint (with the parameters it needs)."""
        endpoint = self.by_key[key]
        if key == "tor":
            return endpoint.uri(fingerprint=self.tor_fingerprint)
        if key == "wireguard":
            return endpoint.uri(public_key=self.wg_public_key,
                                private_key_file=str(self.wg_client_key))
        if key == "tls":
            return endpoint.uri(sni=endpoint.host)
        if key == "obfs4":
            return endpoint.uri(cert=self.obfs4_cert, **{"iat-mode": "0"})
        return endpoint.uri()

    @property
    def startup(self) -> dict[str, float]:
        """Seconds from spawn to serving, per daemon."""
        return {name: round(d.seconds, 2) for name, d in self.running.items()}


def binary(name: str) -> str | None:
    """Path of a daemon binary (PATH, then /usr/sbin and /sbin), or None."""
    found = shutil.which(name)
    if found:
        return found
    return next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None)


def start(lab: Lab) -> EndpointServers:
    """Start every daemon whose binary exists, then wait until each serves."""
    servers = EndpointServers(by_key={e.key: e for e in ENDPOINTS})
    workdir = lab.workdir / "endpoints"
    workdir.mkdir()
    try:
        for starter in (_openvpn, _tor, _obfs4, _stun, _wireguard, _chat):
            starter(lab, servers, workdir)
        for daemon in servers.running.values():
            _wait(daemon)
    except BaseException:
        stop(lab, servers)
        raise
    return servers


def stop(lab: Lab, servers: EndpointServers) -> None:
    """Stop what :func:`start` started (idempotent); remove wireguard-go's socket."""
    for name, daemon in servers.running.items():
        daemon.service.stop()
        lab.services.pop(name, None)
    if servers.wg_socket is not None:
        servers.wg_socket.unlink(missing_ok=True)


def _wait(daemon: Daemon) -> None:
    deadline = daemon.started + READY_TIMEOUT
    service = daemon.service
    while not daemon.ready():
        if not service.alive():
            raise LabError(f"{service.name} exited rc={service.proc.returncode}:\n"
                           f"{service.log_tail()}")
        if time.monotonic() > deadline:
            raise LabError(f"{service.name} not serving after {READY_TIMEOUT}s:\n"
                           f"{service.log_tail()}")
        time.sleep(0.05)
    daemon.seconds = time.monotonic() - daemon.started


def _available(servers: EndpointServers, name: str, keys: tuple[str, ...]) -> str | None:
    """The binary's path, or None after listing ``keys`` as missing (with the apt package)."""
    path = binary(name)
    if path is None:
        reason = f"{name} not installed (apt-get install {daemons.PACKAGES.get(name, name)})"
        servers.missing.update(dict.fromkeys(keys, reason))
    return path


def _spawn(lab: Lab, servers: EndpointServers, name: str, argv: list[str],
           ready: Callable[[Service], bool], env: dict[str, str] | None = None) -> Service:
    service = services.spawn(lab.names.internet, name, argv, lab.workdir, env=env)
    lab.services[name] = service
    servers.running[name] = Daemon(service, lambda: ready(service))
    return service


def _log_has(text: str) -> Callable[[Service], bool]:
    return lambda service: text in service.log_tail(limit=1 << 20)


# --------------------------------------------------------------------------- OpenVPN


def _openvpn(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    path = _available(servers, "openvpn", ("openvpn_udp", "openvpn_tcp"))
    if path is None:
        return
    ca = trustme.CA()
    cert = ca.issue_cert("openvpn.lab.test")
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    for key, proto, end in (("openvpn_udp", "udp4", "u"), ("openvpn_tcp", "tcp4-server", "t")):
        endpoint = servers.endpoint(key)
        conf = workdir / f"{key}.conf"
        conf.write_text(openvpn_conf(endpoint, proto, lab.names.veth(end), workdir))
        _spawn(lab, servers, f"ep_{key}", [path, "--config", str(conf)],
               _log_has("Initialization Sequence Completed"))


def openvpn_conf(endpoint: Endpoint, proto: str, ifname: str, directory: Path) -> str:
    """tests/endpoints' server config, listening on the endpoint's address."""
    text = daemons.OPENVPN_CONF.format(ifname=ifname, proto=proto, port=endpoint.port,
                                       dir=directory)
    return _moved(text, "local 127.0.0.1\n", f"local {endpoint.ip}\n")


def _moved(text: str, old: str, new: str) -> str:
    """Replace exactly one occurrence (the shared template changed if not)."""
    if text.count(old) != 1:
        raise LabError(f"daemon template no longer has exactly one {old!r}")
    return text.replace(old, new)


# --------------------------------------------------------------------------- Tor


def _tor(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    path = _available(servers, "tor", ("tor",))
    if path is None:
        return
    directory = workdir / "tor"
    (directory / "data").mkdir(parents=True, mode=0o700)
    torrc = directory / "torrc"
    torrc.write_text(tor_config(servers.endpoint("tor"), directory))
    fingerprint = directory / "data" / "fingerprint"

    def ready(service: Service) -> bool:
        if not (fingerprint.exists() and _log_has("Opened OR listener")(service)):
            return False
        servers.tor_fingerprint = fingerprint.read_text().split()[1]
        return True

    _spawn(lab, servers, "ep_tor", [path, "-f", str(torrc)], ready)


def tor_config(endpoint: Endpoint, directory: Path) -> str:
    """tests/endpoints' private bridge relay, its OR port on the endpoint's address."""
    text = daemons.TORRC.format(dir=directory, port=endpoint.port, zeros="0" * 40)
    text = _moved(text, f"ORPort 127.0.0.1:{endpoint.port}\n",
                  f"ORPort {endpoint.ip}:{endpoint.port}\n")
    text = _moved(text, "Address 127.0.0.1\n", f"Address {endpoint.ip}\n")
    missing = [line for line in TOR_SAFEGUARDS if line not in text]
    if missing:
        raise LabError(f"torrc lacks its safeguards {missing}: never start it")
    return text


# --------------------------------------------------------------------------- obfs4proxy


def _obfs4(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    if "obfs4" not in servers.by_key:
        return
    path = _available(servers, "obfs4proxy", ("obfs4",))
    if path is None:
        return
    endpoint, relay = servers.endpoint("obfs4"), servers.endpoint("tor")
    state = workdir / "obfs4"
    env = daemons.obfs4_env(f"{endpoint.ip}:{endpoint.port}", f"{relay.ip}:{relay.port}",
                            state, stdin_close=False)  # a lab Service has no stdin to hold

    def ready(service: Service) -> bool:
        if not _log_has("SMETHOD obfs4 ")(service):  # not SMETHOD-ERROR
            return False
        servers.obfs4_cert = daemons.bridge_cert(state)
        return True

    _spawn(lab, servers, "ep_obfs4", [path], ready, env=env)


# --------------------------------------------------------------------------- coturn


def _stun(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    path = _available(servers, "turnserver", ("stun",))
    if path is None:
        return
    endpoint = servers.endpoint("stun")
    argv = [path, "-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "-L", endpoint.ip,
            "-p", str(endpoint.port), "--db", str(workdir / "turndb"), "--log-file", "stdout",
            "--simple-log", "--pidfile", str(workdir / "turn.pid"),
            "--no-software-attribute"]
    _spawn(lab, servers, "ep_stun", argv, _bound(lab, "udp", endpoint))


def _bound(lab: Lab, proto: str, endpoint: Endpoint) -> Callable[[Service], bool]:
    """A socket serves the endpoint's port in the namespace, on its address or the wildcard
    (``ss``: coturn logs no listener line; wireguard-go binds 0.0.0.0)."""
    flag = "-ulnH" if proto == "udp" else "-tlnH"
    wanted = {f"{ip}:{endpoint.port}" for ip in (endpoint.ip, "0.0.0.0", "*")}

    def check(_: Service) -> bool:
        out = netns.run(["ss", flag, "sport", "=", f":{endpoint.port}"],
                        ns=lab.names.internet, check=False).stdout
        return any(len(cols) > 3 and cols[3] in wanted for cols in map(str.split, out.splitlines()))

    return check


# --------------------------------------------------------------------------- WireGuard


def _wireguard(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    path = _available(servers, "wireguard-go", ("wireguard",))
    wg = _available(servers, "wg", ("wireguard",))
    if path is None or wg is None:
        return
    ifname = lab.names.veth("w")
    directory = workdir / "wg"
    directory.mkdir()
    servers.wg_public_key = daemons._wg_key(wg, directory / "server.key")
    client_pub = daemons._wg_key(wg, directory / "client.key")
    servers.wg_client_key = directory / "client.key"
    servers.wg_socket = WG_SOCKET_DIR / f"{ifname}.sock"
    endpoint = servers.endpoint("wireguard")
    configured: list[bool] = []

    def ready(service: Service) -> bool:
        if configured:
            return _bound(lab, "udp", endpoint)(service)
        assert servers.wg_socket is not None
        if not servers.wg_socket.exists():
            return False
        netns.run([wg, "set", ifname, "private-key", str(directory / "server.key"),
                   "listen-port", str(endpoint.port), "peer", client_pub, "allowed-ips",
                   "10.214.0.2/32"], ns=lab.names.internet)
        configured.append(True)
        return False

    _spawn(lab, servers, "ep_wireguard", [path, ifname], ready,
           env={"WG_PROCESS_FOREGROUND": "1"})


# --------------------------------------------------------------------------- tcp:// tls://


def _chat(lab: Lab, servers: EndpointServers, workdir: Path) -> None:
    """kzprobe.simnet ``web`` on the chat address: plain TCP and TLS on their own ports."""
    tcp, tls = servers.endpoint("tcp"), servers.endpoint("tls")
    sites = workdir / "chat-sites.json"
    sites.write_text(json.dumps([{"name": tls.host, "kind": "page", "title": "Chat",
                                  "body": "The chat endpoint of the kzprobe lab."}]))
    argv = services.simnet_argv("web", [
        "--host", tcp.ip, "--http-port", str(tcp.port), "--https-port", str(tls.port),
        "--pki", str(lab.workdir / "pki"), "--sites", str(sites)])
    _spawn(lab, servers, "ep_chat", argv, lambda service: services.ready_line(service) is not None)
