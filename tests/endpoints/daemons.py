"""Real daemons from Debian's packages, on loopback, with generated configs in a tmp dir.

Each starts as a child process, is waited for (bounded) until it serves, and is stopped
by its fixture. None of them is configured to reach anything but 127.0.0.1:

* ``openvpn`` (package ``openvpn``): server mode, TCP and UDP, a TUN device with no
  address or route (``ifconfig-noexec``/``route-noexec``): it only answers the handshake.
* ``tor`` (``tor``): a bridge relay with ``TestingTorNetwork``, ``PublishServerDescriptor
  0``, ``AssumeReachable 1`` and one dummy directory authority at 127.0.0.1:9 (nothing
  listens there), so its only outbound attempts are refused on loopback; the OR port
  serves TLS and the link protocol without bootstrapping.
* ``turnserver`` (``coturn``): STUN only (``-S``), no TLS/DTLS, no CLI, listening on 127.0.0.1.
* ``obfs4proxy`` (``obfs4proxy``): a managed pluggable-transport server (tor's PT protocol,
  environment only), its obfs4 listener on 127.0.0.1 and its "OR port" a local socket that
  only listens; it exits when its stdin closes. It reaches nothing else.
* ``wireguard-go`` (``wireguard-go`` + ``wireguard-tools`` for ``wg``): the userspace
  implementation (the kernel module is not on every CI machine). WireGuard always binds
  the wildcard address, but with no peer endpoint configured it only ever answers the
  datagrams it receives, here from 127.0.0.1.

A missing binary skips the test with the package to install, except under ``CI=true``,
where it fails: CI must exercise the real servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

IN_CI = os.environ.get("CI") == "true"
PACKAGES = {"openvpn": "openvpn", "tor": "tor", "turnserver": "coturn", "obfs4proxy": "obfs4proxy",
            "wireguard-go": "wireguard-go", "wg": "wireguard-tools"}


def require(binary: str, *, root: bool = False) -> str:
    """The binary's path; skip (fail in CI) when it or root is missing."""
    path = shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / binary).exists()), None)
    reason = None
    if path is None:
        reason = f"{binary} not installed (apt-get install {PACKAGES.get(binary, binary)})"
    elif root and (os.geteuid() != 0 or not Path("/dev/net/tun").exists()):
        reason = f"{binary} needs root and /dev/net/tun"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    assert path is not None
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    """Poll ``ready`` until it holds; fail with the daemon's log if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"daemon not ready in {timeout}s: {log.read_text()[-2000:]}")


def log_says(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text(errors="replace")


def tcp_listening(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False
    return probe


@contextlib.contextmanager
def daemon(argv: list[str], log: Path, ready: Callable[[], bool],
           env: dict[str, str] | None = None, timeout: float = 30.0, *, stdin_pipe: bool = False
           ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log`` until the block ends; always stopped.

    ``stdin_pipe``: stdin stays open until the end (pluggable transports exit when it closes).
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    try:
        wait_until(ready, proc, log, timeout)
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def unique_ifname(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 10000}{os.urandom(2).hex()}"[:15]


# --------------------------------------------------------------------------- OpenVPN


OPENVPN_CONF = """mode server
tls-server
dev {ifname}
dev-type tun
topology subnet
ifconfig 10.213.0.1 255.255.255.0
ifconfig-noexec
route-noexec
proto {proto}
local 127.0.0.1
port {port}
ca {dir}/ca.pem
cert {dir}/cert.pem
key {dir}/key.pem
dh none
verb 3
"""


@contextlib.contextmanager
def openvpn_server(directory: Path, proto: str) -> Iterator[int]:
    """An OpenVPN server (``udp4`` or ``tcp4-server``) on 127.0.0.1; yields its port."""
    binary = require("openvpn", root=True)
    ca = trustme.CA()
    cert = ca.issue_cert("openvpn.test")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    port = free_port(socket.SOCK_DGRAM if proto.startswith("udp") else socket.SOCK_STREAM)
    conf = directory / f"{proto}.conf"
    conf.write_text(OPENVPN_CONF.format(ifname=unique_ifname("kzo"), proto=proto, port=port,
                                        dir=directory))
    log = directory / f"{proto}.log"
    with daemon([binary, "--config", str(conf)], log,
                log_says(log, "Initialization Sequence Completed")):
        yield port


# --------------------------------------------------------------------------- Tor


TORRC = """DataDirectory {dir}/data
SocksPort 0
ControlPort 0
ORPort 127.0.0.1:{port}
Address 127.0.0.1
Nickname kzprobetest
AssumeReachable 1
PublishServerDescriptor 0
ExitRelay 0
BridgeRelay 1
TestingTorNetwork 1
DirAuthority kzdummy orport=9 no-v2 v3ident={zeros} 127.0.0.1:9 {zeros}
UseDefaultFallbackDirs 0
GeoIPFile {dir}/geoip-none
GeoIPv6File {dir}/geoip6-none
Log notice stdout
RunAsDaemon 0
"""


@dataclass(frozen=True)
class TorRelay:
    port: int
    fingerprint: str


@contextlib.contextmanager
def tor_relay(directory: Path) -> Iterator[TorRelay]:
    """A private Tor bridge relay whose OR port listens on 127.0.0.1."""
    binary = require("tor")
    (directory / "data").mkdir(mode=0o700)
    port = free_port()
    torrc = directory / "torrc"
    torrc.write_text(TORRC.format(dir=directory, port=port, zeros="0" * 40))
    log = directory / "tor.log"
    fingerprint_file = directory / "data" / "fingerprint"
    with daemon([binary, "-f", str(torrc)], log,
                lambda: fingerprint_file.exists() and tcp_listening(port)(), timeout=60):
        yield TorRelay(port, fingerprint_file.read_text().split()[1])


# --------------------------------------------------------------------------- obfs4proxy


@dataclass(frozen=True)
class Obfs4Bridge:
    port: int
    cert: str  # the bridge line's cert= (unpadded base64 of NODEID | B)


def obfs4_env(bind: str, orport: str, state: Path, *, stdin_close: bool = True
              ) -> dict[str, str]:
    """tor's managed-transport environment for one obfs4 server listener (``stdin_close``:
    it exits when its stdin closes)."""
    env = {"TOR_PT_MANAGED_TRANSPORT_VER": "1", "TOR_PT_SERVER_TRANSPORTS": "obfs4",
           "TOR_PT_SERVER_BINDADDR": f"obfs4-{bind}", "TOR_PT_ORPORT": orport,
           "TOR_PT_STATE_LOCATION": str(state)}
    if stdin_close:
        env["TOR_PT_EXIT_ON_STDIN_CLOSE"] = "1"
    return env


def bridge_cert(state: Path) -> str:
    """The cert= of the bridge line obfs4proxy wrote in its state directory."""
    line = next(x for x in (state / "obfs4_bridgeline.txt").read_text().splitlines()
                if x.startswith("Bridge obfs4"))
    return next(w for w in line.split() if w.startswith("cert=")).removeprefix("cert=")


@contextlib.contextmanager
def obfs4_bridge(directory: Path) -> Iterator[Obfs4Bridge]:
    """obfs4proxy serving obfs4 on 127.0.0.1 (fresh identity), in front of a socket that
    only listens (the handshake never needs the OR port behind it)."""
    binary = require("obfs4proxy")
    port = free_port()
    log = directory / "obfs4proxy.log"
    with socket.socket() as orport:
        orport.bind(("127.0.0.1", 0))
        orport.listen(64)
        orport_address = f"127.0.0.1:{orport.getsockname()[1]}"
        env = obfs4_env(f"127.0.0.1:{port}", orport_address, directory / "state")
        with daemon([binary], log, log_says(log, "SMETHOD obfs4 "), env, stdin_pipe=True):
            yield Obfs4Bridge(port, bridge_cert(directory / "state"))


# --------------------------------------------------------------------------- coturn


@contextlib.contextmanager
def stun_server(directory: Path) -> Iterator[int]:
    """coturn in STUN-only mode on 127.0.0.1; yields its UDP port."""
    binary = require("turnserver")
    port = free_port(socket.SOCK_DGRAM)
    log = directory / "turn.log"
    argv = [binary, "-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "-L", "127.0.0.1",
            "-p", str(port), "--db", str(directory / "turndb"), "--log-file", "stdout",
            "--simple-log", "--pidfile", str(directory / "turn.pid"), "--no-software-attribute"]
    with daemon(argv, log, log_says(log, "SQLite DB connection success")):
        time.sleep(0.2)  # the listener threads start just after the DB
        yield port


# --------------------------------------------------------------------------- WireGuard


@dataclass(frozen=True)
class WireGuardServer:
    port: int
    public_key: str
    client_key_file: Path  # a registered peer's private key
    other_key_file: Path  # a key the server does not know


def _wg_key(wg: str, path: Path) -> str:
    private = subprocess.run([wg, "genkey"], capture_output=True, check=True, timeout=10).stdout
    path.write_bytes(private)
    path.chmod(0o600)
    return subprocess.run([wg, "pubkey"], input=private, capture_output=True, check=True,
                          timeout=10).stdout.decode().strip()


@contextlib.contextmanager
def wireguard_server(directory: Path) -> Iterator[WireGuardServer]:
    """wireguard-go with one registered peer (no endpoint: it never initiates)."""
    binary = require("wireguard-go", root=True)
    wg = require("wg")
    ifname = unique_ifname("kzw")
    server_pub = _wg_key(wg, directory / "server.key")
    client_pub = _wg_key(wg, directory / "client.key")
    _wg_key(wg, directory / "other.key")
    port = free_port(socket.SOCK_DGRAM)
    log = directory / "wg.log"
    sock = Path(f"/var/run/wireguard/{ifname}.sock")
    with daemon([binary, ifname], log, sock.exists, env={"WG_PROCESS_FOREGROUND": "1"}):
        subprocess.run([wg, "set", ifname, "private-key", str(directory / "server.key"),
                        "listen-port", str(port), "peer", client_pub, "allowed-ips",
                        "10.214.0.2/32"], check=True, timeout=10, capture_output=True)
        yield WireGuardServer(port, server_pub, directory / "client.key",
                              directory / "other.key")
