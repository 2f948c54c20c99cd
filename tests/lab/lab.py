"""The :class:`Lab`: a censored internet in three network namespaces, built once per session.

``Lab.up()`` builds the topology (:mod:`.topology`), starts the ``kzprobe.simnet`` servers
(:mod:`.servers`) and returns a handle with every name and address; ``lab.scenario(name)``
applies one censorship scenario (:mod:`.faults`) and removes it afterwards; ``lab.close()``
kills exactly the processes it started, deletes the namespaces and reports anything that
leaked out of 198.18.0.0/15.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import faults, netns, servers, tomlw, topology
from .faults import Scenario
from .services import REPO_ROOT, Service, lab_env
from .topology import SITES, Names, Site

RAWCLIENT = Path(__file__).with_name("rawclient.py")

# Short deadlines keep the suite fast; the faults are local so nothing legitimate is slow.
LAB_TIMEOUTS = {"dns": 1.0, "connect": 1.5, "tls": 1.5, "http": 3.0, "control": 5.0,
                "measurement": 20.0}


class Lab:
    """Handle on a running lab: names, addresses, servers, scenarios, client commands."""

    def __init__(self, names: Names, workdir: Path) -> None:
        self.names = names
        self.workdir = workdir
        self.sites: dict[str, Site] = {s.key: s for s in SITES}
        self.services: dict[str, Service] = {}
        self.pki: servers.Pki | None = None
        self.client_ip = topology.CLIENT_IP
        self.resolver_ip = topology.ROUTER_CLIENT_IP  # the ISP resolver
        self.authoritative_ip = topology.INTERNET_IP
        self.blockpage_ip = topology.BLOCKPAGE_IP
        self.proxy_ip = topology.PROXY_IP
        self.active: Scenario | None = None
        self.isp_rules: dict[str, str] = {}  # per-name rules of the ISP resolver (scenarios)
        self.isp_default = f"forward:{topology.INTERNET_IP}:53"
        self.isp_rules_path = workdir / "isp-dns-rules.json"
        self.proxy_rules: dict[str, str] = {}  # per-SNI actions of the transparent proxy
        self.proxy_rules_path = workdir / "proxy-rules.json"
        self.boxes = {  # router services that scenarios divert traffic to
            "filter": (topology.ROUTER_CLIENT_IP, servers.FILTER_PORT),
            "mitm": (topology.ROUTER_CLIENT_IP, servers.MITM_PORT),
            "blockpage_proxy": (topology.ROUTER_CLIENT_IP, servers.BLOCKPAGE_PROXY_PORT),
            "diff_proxy": (topology.ROUTER_CLIENT_IP, servers.DIFF_PROXY_PORT),
        }
        self.control_url: str | None = None  # the control helper, once it runs
        self.geoip_control_url: str | None = None  # a second helper, with the lab ASN database
        self.asn_db: Path | None = None  # the lab's IP-to-ASN database (geoip.LAB_ASNS)
        self.control_missing = ""  # why there is no control helper
        self.netem = False  # set at bring-up: can this kernel do tc netem?
        self.mechanisms: dict[str, str] = {}  # fault -> mechanism actually used
        self.startup_seconds = 0.0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def up(cls) -> Lab:
        """Build the topology and start every server; tear down again if any step fails."""
        start = time.monotonic()
        names = Names.fresh()
        lab = cls(names, Path(tempfile.mkdtemp(prefix=f"{netns.PREFIX}{names.pid}-")))
        try:
            topology.build(lab.names)
            servers.write_resolv_confs(lab.names)
            servers.start_all(lab)
        except BaseException:
            lab.close()
            raise
        lab.startup_seconds = time.monotonic() - start
        return lab

    def close(self) -> list[str]:
        """Stop servers, delete namespaces; return problems (egress rejections, leftovers)."""
        if self._closed:
            return []
        self._closed = True
        problems = self._egress_problems()
        for service in reversed(list(self.services.values())):
            service.stop()
        problems += topology.teardown(self.names)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def _egress_problems(self) -> list[str]:
        try:
            counts = self.egress_rejections()
        except netns.LabError as exc:
            return [f"cannot read egress counters: {exc}"]
        return [f"{ns}: {n} packet(s) addressed outside 198.18.0.0/15 were rejected"
                for ns, n in counts.items() if n]

    # ------------------------------------------------------------------ queries

    def site(self, key: str) -> Site:
        return self.sites[key]

    def url(self, key: str, scheme: str = "https", path: str = "/") -> str:
        """URL of a site by key, with its Unicode host (kzprobe does the IDNA encoding)."""
        return f"{scheme}://{self.sites[key].host}{path}"

    @property
    def ca_file(self) -> Path:
        """PEM of the public test CA every honest site's certificate chains to."""
        assert self.pki is not None, "lab PKI not ready"
        return self.pki.public_ca

    def egress_rejections(self) -> dict[str, int]:
        """Packets each namespace's egress guard rejected (anything not for the lab)."""
        return {ns: topology.egress_rejections(ns) for ns in self.names.all}

    def service(self, name: str) -> Service:
        return self.services[name]

    # ------------------------------------------------------------------ scenarios

    @contextlib.contextmanager
    def scenario(self, name: str) -> Iterator[Scenario]:
        """Apply one scenario's faults (each verified), yield it, then remove them all."""
        assert self.active is None, f"scenario {self.active} still active"
        scenario = faults.catalog(self)[name]
        self.active = scenario
        try:
            scenario.install(self)
            yield scenario
        finally:
            self.active = None
            scenario.remove(self)
            faults.assert_clean(self)

    # ------------------------------------------------------------------ client side

    def client_run(self, argv: Sequence[str], timeout: float = 30.0, *,
                   input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the client namespace (its resolv.conf points at the ISP resolver)."""
        return subprocess.run(["ip", "netns", "exec", self.names.client, *argv],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                              env=lab_env(), input=input, check=False)

    def raw(self, command: str, *args: str, timeout: float = 3.0) -> dict[str, Any]:
        """Run one :mod:`.rawclient` command in the client namespace; its JSON result."""
        argv = [sys.executable, str(RAWCLIENT), "--timeout", str(timeout), command, *args]
        proc = self.client_run(argv, timeout=timeout * 3 + 10)
        if proc.returncode != 0:
            raise netns.LabError(f"rawclient {command} failed: {proc.stderr[-1000:]}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def kzprobe(self, args: Sequence[str],
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m kzprobe ARGS`` in the client namespace."""
        return self.client_run([sys.executable, "-m", "kzprobe", *args], timeout=timeout)

    def measure(self, url: str, config: Path, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``kzprobe measure URL --config FILE``; the JSON records it printed."""
        proc = self.kzprobe(["measure", url, "--config", str(config)], timeout=timeout)
        records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert records, f"no record (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
        return records

    # ------------------------------------------------------------------ config

    def config_sections(self, tmp_path: Path) -> dict[str, dict[str, Any]]:
        """The lab's default kzprobe config, as TOML sections."""
        return {
            "probe": {"cc": "ZZ", "asn": "AS0", "network_name": "kzprobe lab"},
            "dns": {"resolvers": [self.resolver_ip], "query_aaaa": True, "tries": 1},
            "tls": {"ca_file": str(self.ca_file)},
            "timeouts": dict(LAB_TIMEOUTS),
            "analysis": {"not_bogon": ["198.18.0.0/15", "127.0.0.0/8"], "retries": 0,
                         "benign_sni": self.sites["open"].host, "throttle_min_seconds": 1.0},
            "output": {"dir": str(tmp_path / "out"), "compress": "none",
                       "store_bodies": "always"},  # tests read the page they were served
            "control": {"helper_url": [self.control_url] if self.control_url else None},
        }

    def write_config(self, tmp_path: Path,
                     **overrides: Mapping[str, Any] | None) -> Path:
        """Write a kzprobe TOML for the client; ``section={key: value}`` merges, ``None`` drops."""
        sections = tomlw.merge(self.config_sections(tmp_path), overrides)
        path = tmp_path / "kzprobe-lab.toml"
        path.write_text(tomlw.dumps(sections), encoding="utf-8")
        return path
