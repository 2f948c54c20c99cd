"""``kzprobe demo``'s network: a small censored internet on loopback, no root needed.

:class:`DemoNetwork` starts, on distinct 127.0.0.x addresses and free high ports, an
authoritative DNS server (the honest view), an ISP resolver that forwards to it but lies
for two names, one web server hosting every site, three SNI filters (RST, blackhole,
throttle), a transparent blockpage proxy, a TLS interception box with the 2019 Qaznet
chain, an HTTP/3 server for two sites whose HTTPS pages advertise it (``Alt-Svc: h3``), and a
UDP filter in front of one of them (the ISP blocks its QUIC, TCP passes). Every HTTP site
shares one port and every HTTPS site another, so target URLs read
``https://news.demo:<port>/``. :meth:`DemoNetwork.config_toml` writes the kzprobe config
that sweeps it.

The network has a border: the web server and the SNI filters on the path to it are
"international" (so is the control helper, which ``kzprobe demo`` runs); the resolvers, a
government portal (``gov.demo``, the domestic anchor) and the ISP's own blockpage proxy and
interception box are "domestic". :meth:`DemoNetwork.cut_international` stops every
international listener (connections are refused, which keeps the demo short; a real cut
mostly times out) and :meth:`DemoNetwork.restore_international` starts them again on the
same ports.

Filtered sites are reached through their middlebox because DNS (honest and ISP alike)
gives the middlebox's address: on loopback nothing can sit on the path, so the box *is*
the path. That keeps DNS consistent for SNI blocking and MITM, as OONI found in
Kazakhstan, while the two DNS lies differ between the resolvers.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from kzprobe.simnet.blockpage import BlockpageProxy
from kzprobe.simnet.common import HostPort, NameRules, Service, format_hostport, parse_hostport
from kzprobe.simnet.dns import Behaviour, DnsServer, Zone
from kzprobe.simnet.dot import DotServer
from kzprobe.simnet.h3 import H3Server, UdpDrop
from kzprobe.simnet.mitm import MitmBox
from kzprobe.simnet.pki import Pki, PkiFiles, process_pki
from kzprobe.simnet.sni_filter import Action, SniFilter
from kzprobe.simnet.web import Site, WebServer


class DemoTarget(NamedTuple):
    """One URL of the demo sweep, its Citizen Lab category, and what the network does to it."""

    url: str
    category_code: str
    what_happens: str


# Host numbers under the prefix (127.0.0.x). Servers sit in .0/26, which the generated
# config declares "not a bogon"; the ISP's forged answer .100 is outside it on purpose.
AUTH_DNS, ISP_DNS, WEB, RESET_BOX, BLACKHOLE_BOX, THROTTLE_BOX, BLOCKPAGE_BOX, MITM_BOX, DOWN = (
    10, 11, 20, 21, 22, 23, 24, 25, 26)
GOV = 12  # a domestic site (the domestic anchor): inside the border
DOT = 14  # an honest DNS-over-TLS resolver (domestic: a cut leaves it up)
DOT_NAME = "dns.demo"  # the name on its certificate (the dot:// target's sni)
RECEIVER = 13  # the operator's alert receiver (webhook and heartbeat): never cut
MITM_ENGINE = 27  # the interception box proper; MITM_BOX diverts the targeted name to it
QUIC_BOX = 28  # drops UDP (QUIC) to h3blocked.demo, passes its TCP
HELPER = 30  # the control helper listens here ...
OUTSIDE = 50  # ... and dials from here: the censor lets this "foreign" source through
BOGUS = 100
# The demo's IP-to-ASN database (tests/geoipdb.py writes it): the probe's 127.0.0.1 and the
# ISP resolver in "Demo ISP" AS64501, the sites, boxes and helper in "Demo Internet" AS64500.
DEMO_ASN_DB = Path(__file__).with_name("data") / "demo-asn.mmdb"
THROTTLE_SECONDS = 1.2
LARGE_BYTES = 4 * 1024 * 1024
_START_ATTEMPTS = 10

_SITES = (
    Site(name="plain.demo", title="Plain Daily", body="An ordinary news page over plain HTTP."),
    Site(name="news.demo", title="Demo News", body="An ordinary news page over HTTPS."),
    Site(name="жаңалықтар.demo", title="Жаңалықтар", body="Қазақ тіліндегі жаңалықтар сайты."),
    Site(name="opposition.demo", title="Opposition Party", body="Our programme for reform."),
    Site(name="rights.demo", title="Human Rights Monitor", body="Reports on detentions."),
    Site(name="vpn.demo", title="Free VPN", body="Download our circumvention app."),
    Site(name="media.demo", title="Independent Media", body="Investigations and analysis."),
    Site(name="radio.demo", title="Radio Liberty Demo", body="Listen live; read our reports."),
    Site(name="blocked.demo", title="Citizen Forum", body="Discussion of local politics."),
    Site(name="social.demo", title="Social Network", body="Posts from your friends."),
    Site(name="benign.demo", title="Benign", body="A name no one blocks (benign SNI checks)."),
    Site(name="r1.demo", kind="redirect", redirect_to="r2.demo"),
    Site(name="r2.demo", kind="redirect", redirect_to="r3.demo"),
    Site(name="r3.demo", kind="redirect", redirect_to="news.demo"),
    Site(name="large.demo", kind="large", size=LARGE_BYTES),
    Site(name="echo.demo", kind="echo"),
    Site(name="missing.demo", kind="not_found"),
    Site(name="example.demo", title="Example Domain",
         body="A reference site abroad: the probe's international anchor."),
)
_H3_SITES = (  # served over HTTP/3 too; their HTTPS pages carry Alt-Svc h3 (set at start)
    Site(name="h3.demo", title="Demo Video", body="A video site that also speaks HTTP/3."),
    Site(name="h3blocked.demo", title="Demo Stream",
         body="A streaming site whose QUIC the ISP drops."),
)
_DOMESTIC_SITES = (
    Site(name="gov.demo", title="eGov Demo",
         body="Government services, hosted in the country: the probe's domestic anchor."),
)
# Services behind the border, stopped by a cut: the sites and the SNI filters on the path to
# them. The rest are domestic and stay up: the resolvers, gov.demo, and the ISP's own
# blockpage proxy and interception box, which answer for their names by themselves.
INTERNATIONAL = ("web", "sni_reset", "sni_blackhole", "sni_throttle", "quic_box_tcp")
_BEHIND = {"vpn.demo": RESET_BOX, "media.demo": BLACKHOLE_BOX, "radio.demo": THROTTLE_BOX,
           "blocked.demo": BLOCKPAGE_BOX, "social.demo": MITM_BOX, "down.demo": DOWN,
           "h3blocked.demo": QUIC_BOX}
_TARGETS = (  # (scheme, name, category, what happens)
    ("http", "plain.demo", "NEWS", "fine: plain HTTP page, nothing interferes"),
    ("https", "news.demo", "NEWS", "fine: HTTPS page, nothing interferes"),
    ("https", "жаңалықтар.demo", "NEWS",
     "fine: IDNA name (punycode on the wire), nothing interferes"),
    ("https", "opposition.demo", "POLR",
     "DNS: the ISP resolver says NXDOMAIN; the honest resolver has the address"),
    ("https", "rights.demo", "HUMR",
     "DNS: the ISP resolver forges the bogon 127.0.0.100, where nothing listens"),
    ("https", "vpn.demo", "ANON", "SNI filter: TCP RST right after the ClientHello"),
    ("https", "media.demo", "NEWS",
     "SNI filter: ClientHello swallowed, TLS handshake times out (Kazakhstan 2023-24)"),
    ("https", "radio.demo", "NEWS",
     f"SNI throttling: server bytes held {THROTTLE_SECONDS} s, slow but complete handshake "
     "(Kazakhstan 2022-23)"),
    ("http", "blocked.demo", "POLR",
     "transparent HTTP proxy: blockpage 'Страница заблокирована' instead of the page"),
    ("https", "social.demo", "GRP",
     "TLS MITM: leaf issued by C=KZ 'Security Certificate' (Qaznet chain, 2019)"),
    ("https", "down.demo", "MISC",
     "down everywhere: connection refused for everyone, not censorship"),
    ("https", "h3.demo", "MMED", "fine: HTTPS page advertising HTTP/3, fetched over QUIC too"),
    ("https", "h3blocked.demo", "MMED",
     "QUIC blocked: UDP to the site dropped, HTTPS works (quic.timeout, still accessible)"),
)


class DemoNetwork:
    """The demo's simulated censored internet, as an async context manager."""

    def __init__(self, *, prefix: str = "127.0.0.", workdir: Path | None = None,
                 pki: Pki | None = None) -> None:
        self.prefix = prefix
        self._pki = pki
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kzprobe-demo-"))
        self.files: PkiFiles | None = None
        self.services: dict[str, Service] = {}
        self._placeholders: list[socket.socket] = []
        self._cut: list[socket.socket] = []  # held while the international link is cut
        self._isp: DnsServer | None = None
        self.http_port = self.https_port = self.dns_port = 0

    def ip(self, host: int) -> str:
        return f"{self.prefix}{host}"

    @property
    def exempt(self) -> frozenset[str]:
        """Sources the middleboxes let through untouched: the control vantage."""
        return frozenset({self.ip(OUTSIDE)})

    @property
    def helper_listen(self) -> str:
        """Where ``kzprobe demo`` runs its control helper (port chosen by the caller)."""
        return self.ip(HELPER)

    @property
    def outside_address(self) -> str:
        """The helper's source address: traffic from it is not censored."""
        return self.ip(OUTSIDE)

    @property
    def not_bogon(self) -> str:
        """The servers' /26 (.0-.63): real addresses in the demo, unlike the forged .100."""
        return f"{self.prefix}0/26"

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start everything; retry with other ports if a chosen port is taken."""
        pki = self._pki or process_pki()
        self.files = pki.write(self.workdir / "pki")
        for attempt in range(_START_ATTEMPTS):
            try:
                await self._start_once(pki)
                return
            except OSError as exc:
                await self._stop_services()
                if exc.errno != errno.EADDRINUSE or attempt == _START_ATTEMPTS - 1:
                    await self.stop()
                    raise
            except BaseException:
                await self.stop()
                raise

    async def _start_once(self, pki: Pki) -> None:
        web = WebServer(self.ip(WEB), _SITES, ca=pki.public)
        await self._add("web", web)
        self.http_port, self.https_port = web.address("http")[1], web.address("https")[1]
        await self._start_h3(web, pki)
        auth = DnsServer((self.ip(AUTH_DNS), 0), zone=self._zone())
        await self._add("auth_dns", auth)
        self.dns_port = auth.address[1]
        self._isp = DnsServer((self.ip(ISP_DNS), self.dns_port), rules=self._isp_rules(),
                              authoritative=False)
        await self._add("isp_dns", self._isp)
        await self._add("gov", WebServer(self.ip(GOV), _DOMESTIC_SITES, http_port=None,
                                         https_port=self.https_port, ca=pki.public))
        await self._add("dot", DotServer((self.ip(DOT), 0), auth,
                                         pki.public.server_context(DOT_NAME, self.ip(DOT))))
        await self._start_middleboxes(pki)
        for host in (DOWN, BOGUS):  # bound, never listening: connections are refused
            for port in (self.http_port, self.https_port):
                self._placeholders.append(_placeholder(self.ip(host), port))

    async def _start_middleboxes(self, pki: Pki) -> None:
        site_tls, site_http = (self.ip(WEB), self.https_port), (self.ip(WEB), self.http_port)
        boxes: dict[str, Service] = {
            "sni_reset": _filter(self._tls_at(RESET_BOX), site_tls, "vpn.demo", "reset",
                                 exempt=self.exempt),
            "sni_blackhole": _filter(self._tls_at(BLACKHOLE_BOX), site_tls, "media.demo",
                                     "blackhole", exempt=self.exempt),
            "sni_throttle": _filter(self._tls_at(THROTTLE_BOX), site_tls, "radio.demo",
                                    f"delay:{THROTTLE_SECONDS}", exempt=self.exempt),
            "blockpage": BlockpageProxy((self.ip(BLOCKPAGE_BOX), self.http_port), site_http,
                                        ("blocked.demo",), exempt=self.exempt),
            "mitm": MitmBox(self._tls_at(MITM_ENGINE), site_tls, pki.qaznet,
                            upstream_ca=pki.public.cert_pem),
            "mitm_divert": _filter(self._tls_at(MITM_BOX), site_tls, "social.demo",
                                   f"divert:{format_hostport(self._tls_at(MITM_ENGINE))}",
                                   exempt=self.exempt),
        }
        for name, box in boxes.items():
            await self._add(name, box)

    async def _start_h3(self, web: WebServer, pki: Pki) -> None:
        """HTTP/3 on the HTTPS port number (UDP), advertised by the HTTPS pages; a UDP filter
        drops h3blocked.demo's QUIC, and a pass-through filter carries its TCP."""
        alt_svc = (("Alt-Svc", f'h3=":{self.https_port}"; ma=3600'),)
        web.set_sites((*_SITES, *(replace(s, headers=alt_svc) for s in _H3_SITES)))
        h3 = (self.ip(WEB), self.https_port)
        await self._add("h3", H3Server(*h3, _H3_SITES, ca=pki.public))
        await self._add("quic_box_udp", UdpDrop(self._tls_at(QUIC_BOX), h3, exempt=self.exempt))
        await self._add("quic_box_tcp", _filter(self._tls_at(QUIC_BOX), self._tls_at(WEB),
                                                "h3blocked.demo", "pass", exempt=self.exempt))

    def _tls_at(self, host: int) -> HostPort:
        return self.ip(host), self.https_port

    async def _add(self, name: str, service: Service) -> None:
        await service.start()
        self.services[name] = service

    async def _stop_services(self) -> None:
        for service in reversed(list(self.services.values())):
            await service.stop()
        self.services.clear()
        for sock in [*self._placeholders, *self._cut]:
            sock.close()
        self._placeholders.clear()
        self._cut.clear()

    async def stop(self) -> None:
        """Stop every server and remove the work directory if it was ours."""
        await self._stop_services()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ----------------------------------------------------------------- what the demo switches

    @property
    def international_cut(self) -> bool:
        return bool(self._cut)

    async def cut_international(self) -> None:
        """Stop every listener behind the border; hold its address so it stays refused."""
        if self._cut:
            return
        for name in reversed(INTERNATIONAL):
            service = self.services[name]
            bound = [parse_hostport(a) for a in service.addresses().values()]
            await service.stop()
            self._cut.extend(_placeholder(host, port, reuse=True) for host, port in bound)

    async def restore_international(self) -> None:
        """Start the international listeners again, each on its old address."""
        for sock in self._cut:
            sock.close()
        self._cut.clear()
        for name in INTERNATIONAL:
            await self.services[name].start()

    def block_by_dns(self, name: str) -> None:
        """The ISP resolver answers NXDOMAIN for ``name`` from now on (the honest one not)."""
        if self._isp is None:
            raise RuntimeError("not started")
        self._isp.set_rule(name, "nxdomain")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ----------------------------------------------------------------- DNS

    def _zone(self) -> Zone:
        addresses = {site.name: [self.ip(_BEHIND.get(site.name, WEB))]
                     for site in (*_SITES, *_H3_SITES)}
        addresses["down.demo"] = [self.ip(DOWN)]
        addresses.update({site.name: [self.ip(GOV)] for site in _DOMESTIC_SITES})
        return Zone.build(addresses, {"www.news.demo": "news.demo"})

    def _isp_rules(self) -> NameRules[Behaviour]:
        upstream = format_hostport((self.ip(AUTH_DNS), self.dns_port))
        return NameRules(Behaviour.parse(f"forward:{upstream}"), {
            "opposition.demo": Behaviour("nxdomain"),
            "rights.demo": Behaviour("bogus", address=self.ip(BOGUS)),
        })

    # ----------------------------------------------------------------- what the CLI needs

    @property
    def targets(self) -> list[DemoTarget]:
        ports = {"http": self.http_port, "https": self.https_port}
        return [DemoTarget(f"{scheme}://{name}:{ports[scheme]}/", category, what)
                for scheme, name, category, what in _TARGETS] + [self._dot_target()]

    def _dot_target(self) -> DemoTarget:
        """The encrypted resolver as an endpoint, asked a name the ISP's resolver lies about
        (the URI as kzprobe writes it: parameters sorted)."""
        dot = self.services["dot"].addresses()["dot"]
        return DemoTarget(f"dot://{dot}?name=opposition.demo&sni={DOT_NAME}", "ANON",
                          "fine: DNS over TLS to an honest resolver; it answers for "
                          "opposition.demo, which the ISP resolver says does not exist")

    @property
    def ca_file(self) -> Path:
        """The public CA: kzprobe's ``tls.ca_file`` (the Qaznet root is not in it)."""
        if self.files is None:
            raise RuntimeError("not started")
        return self.files.ca_file

    @property
    def receiver_host(self) -> str:
        """Where ``kzprobe demo`` runs its alert receiver (domestic: a cut leaves it up)."""
        return self.ip(RECEIVER)

    @property
    def anchors(self) -> list[tuple[str, str]]:
        """``[network] anchors`` as (target, scope): a site on each side of the border and
        the ISP resolver (the control helper counts as international by itself)."""
        return [(f"https://gov.demo:{self.https_port}/", "domestic"),
                ("resolvers", "domestic"),
                (f"https://example.demo:{self.https_port}/", "international")]

    @property
    def isp_resolver(self) -> str:
        return format_hostport((self.ip(ISP_DNS), self.dns_port))

    @property
    def honest_resolver(self) -> str:
        return format_hostport((self.ip(AUTH_DNS), self.dns_port))

    def addresses(self) -> dict[str, dict[str, str]]:
        """Every running component's bound addresses, by role."""
        return {name: service.addresses() for name, service in self.services.items()}

    def helper_config_toml(self, port: int = 0) -> str:
        """Config for the demo's control helper: the honest resolver, outside the censor
        (``port`` 0 picks one; a restart after a cut passes the old one)."""
        q = json.dumps
        return f"""# kzprobe demo: the control vantage ("outside the country"; generated)
[dns]
resolvers = [{q(self.honest_resolver)}]
query_aaaa = false

[tls]
ca_file = {q(str(self.ca_file))}

[timeouts]
dns = 2.0
connect = 2.0
tls = 2.0
http = 3.0

[helper]
listen = "{self.helper_listen}:{port}"
bind_address = {q(self.outside_address)}
allow_nets = [{q(self.not_bogon)}]
rate_per_client = 1000.0
rate_burst = 1000
allowed_ports = ["1-65535"]  # the demo's sites listen on ephemeral loopback ports
{self._geoip_toml()}"""

    def _geoip_toml(self) -> str:
        """``[geoip]`` with the bundled demo database (its plan is 127.0.0.x: another
        prefix finds no ASN, and the analysis falls back to its TLS stand-in)."""
        return f"\n[geoip]\nasn_db = {json.dumps(str(DEMO_ASN_DB))}\n"

    def config_toml(self, output_dir: Path, *, helper_url: str | None = None,
                    webhook_url: str | None = None, heartbeat_url: str = "") -> str:
        """A kzprobe config that sweeps the demo targets through the ISP resolver, confirms
        a change in one sweep, tells ``webhook_url`` (format json) and watches the border."""
        q = json.dumps  # a JSON string is a valid TOML basic string
        webhooks = f"{{ url = {q(webhook_url)}, format = \"json\" }}" if webhook_url else ""
        anchors = "".join(f"  {{ target = {q(target)}, scope = {q(scope)} }},\n"
                          for target, scope in self.anchors)
        return _CONFIG_TEMPLATE.format(
            resolver=q(self.isp_resolver), ca_file=q(str(self.ca_file)),
            urls="".join(f"  {q(t.url, ensure_ascii=False)},\n" for t in self.targets),
            output_dir=q(str(output_dir)), not_bogon=self.not_bogon,
            bogus=self.ip(BOGUS), helper_url=q(helper_url) if helper_url else "",
            webhooks=webhooks, heartbeat_url=q(heartbeat_url), anchors=anchors) \
            + self._geoip_toml()


_CONFIG_TEMPLATE = """\
# kzprobe demo: sweep of a simulated censored internet on loopback (generated)
[probe]
# asn and network_name are detected with [geoip] (the bundled demo database)
cc = "ZZ"
id = "demo"

[dns]
resolvers = [{resolver}]

[tls]
ca_file = {ca_file}

[timeouts]
dns = 2.0
connect = 2.0
tls = 2.0
http = 3.0
control = 5.0
measurement = 20.0

[limits]
rate = 20.0
burst = 20
concurrency = 16
per_host = 4

[targets]
urls = [
{urls}]

[output]
dir = {output_dir}
compress = "none"
store_bodies = "always"  # small pages: the summary shows each page's title

[service]
metrics_listen = ""  # no /metrics port for a demo

[control]
helper_url = [{helper_url}]

[analysis]
# Demo servers live in {not_bogon}; the ISP's forged {bogus} stays a bogon.
not_bogon = ["{not_bogon}"]
retries = 1
benign_sni = "benign.demo"
throttle_min_seconds = 1.0

[alerts]
confirm = 1  # one sweep confirms a change (deployments: 2, so one odd sweep is no alarm)
webhooks = [{webhooks}]
heartbeat_url = {heartbeat_url}  # POSTed after every finished sweep

[network]
anchors = [
{anchors}]
interval = 1.0  # seconds between anchor checks (deployments: 30)
recheck = 0.25  # ... while a change waits for confirmation
outage_rate = 0.5
degraded_min_seconds = 5.0  # loopback times are too short to judge throttling by
"""


def _filter(listen: HostPort, upstream: HostPort, name: str, action: str, *,
            exempt: frozenset[str] = frozenset()) -> SniFilter:
    rules = NameRules(Action("pass"), {name: Action.parse(action)})
    return SniFilter(listen, upstream, rules=rules, blackhole_seconds=30.0, exempt=exempt)


def _placeholder(host: str, port: int, *, reuse: bool = False) -> socket.socket:
    """Hold ``host:port`` without listening, so nothing else can serve it (``reuse``: the
    address was just served, and its closed connections may linger in TIME_WAIT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
