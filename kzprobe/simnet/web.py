"""The honest web of the simulated internet: aiohttp virtual hosts over HTTP and HTTPS.

Sites are keyed by Host (HTTPS: certificate chosen by SNI, issued by the public CA), so
one server on one address can host every site, and what a middlebox in front of it
changes is visible by comparison. Site kinds:

``page``       a title and body, padded to a realistic length; other paths give 404
``redirect``   302 to the same scheme and port on host ``redirect_to`` (chains across hosts)
``large``      ``size`` bytes of application/octet-stream, streamed in 64 KiB chunks
``echo``       the client's IP address in the body and in ``X-Client-IP``
``not_found``  an honest 404 for every path

Sites files (CLI) are JSON lists of objects with the :class:`Site` field names.
"""

from __future__ import annotations

import asyncio
import html
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from aiohttp import web

from kzprobe.simnet.common import (
    HostPort,
    Service,
    bind_tcp,
    format_hostport,
    normalize_name,
    sock_address,
)
from kzprobe.simnet.pki import PublicCA

SiteKind = Literal["page", "redirect", "large", "echo", "not_found"]
_KINDS = ("page", "redirect", "large", "echo", "not_found")
SERVER_HEADER = "simnet"
_CHUNK = 64 * 1024
_PATTERN = b"kzprobe simnet large file: 0123456789abcdefghijklmnopqrstuvwxyz\n"
_FILLER = ("Residents of the capital gathered on Saturday to discuss the new transport plan. "
           "Officials said the work would take two years; several speakers asked for "
           "published budgets and independent oversight. ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """One virtual host; ``name`` may be Unicode (served under its A-label)."""

    name: str
    kind: SiteKind = "page"
    title: str = ""
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    redirect_to: str | None = None
    size: int = 0
    filler: int = 2048  # bytes of article text appended to a page

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Site:
        """Build from a JSON object; raise ValueError on unknown keys or kinds."""
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown or "name" not in obj:
            raise ValueError(f"site needs 'name'; unknown keys: {sorted(unknown)}")
        values = dict(obj)
        values["headers"] = tuple((str(k), str(v)) for k, v in dict(obj.get("headers", {})).items())
        if values.get("kind", "page") not in _KINDS:
            raise ValueError(f"unknown site kind {values['kind']!r}")
        return cls(**values)


def render_page(site: Site) -> str:
    """The HTML of a ``page`` site: title, body, and deterministic filler text."""
    title = html.escape(site.title or site.name)
    filler = (_FILLER * (site.filler // len(_FILLER) + 1))[:site.filler]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n<body><h1>{title}</h1>\n"
            f"<p>{html.escape(site.body)}</p>\n<article><p>{filler}</p></article>\n"
            f"</body></html>\n")


NOT_FOUND_HTML = ("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                  "<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>"
                  "</body></html>\n")


def _split_host(host: str) -> tuple[str, str]:
    """("name", ":port" or "") from a Host header value."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, f":{port}"
    return host, ""


class WebServer(Service):
    """Every site on one address: HTTP on ``http_port``, HTTPS on ``https_port`` (None: off)."""

    def __init__(self, host: str, sites: Iterable[Site], *, http_port: int | None = 0,
                 https_port: int | None = 0, ca: PublicCA | None = None,
                 shutdown_timeout: float = 1.0, write_timeout: float = 30.0) -> None:
        if https_port is not None and ca is None:
            raise ValueError("HTTPS needs a CA")
        self.host, self.ca = host, ca
        self.ports = {"http": http_port, "https": https_port}
        self.shutdown_timeout, self.write_timeout = shutdown_timeout, write_timeout
        self._sites: dict[str, Site] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._bound: dict[str, HostPort] = {}
        self._runner: web.AppRunner | None = None
        self.set_sites(sites)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout,
                               handler_cancellation=True)
        await runner.setup()
        self._runner = runner
        try:
            for scheme, port in self.ports.items():
                if port is not None:
                    await self._serve(runner, scheme, port)
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, runner: web.AppRunner, scheme: str, port: int) -> None:
        sock = bind_tcp(self.host, port)
        self._bound[scheme] = sock_address(sock)
        self.ports[scheme] = self._bound[scheme][1]  # a restart listens where this one did
        ctx = self._tls_context() if scheme == "https" else None
        await web.SockSite(runner, sock, ssl_context=ctx).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def address(self, scheme: str = "http") -> HostPort:
        if scheme not in self._bound:
            raise RuntimeError(f"{scheme} is not being served")
        return self._bound[scheme]

    def addresses(self) -> dict[str, str]:
        return {scheme: format_hostport(addr) for scheme, addr in self._bound.items()}

    def set_sites(self, sites: Iterable[Site]) -> None:
        """Replace the sites (and their certificates) without restarting."""
        table = {normalize_name(site.name): site for site in sites}
        if self.ca is not None:
            self._contexts = {name: self.ca.server_context(name) for name in table}
        self._sites = table

    def load_rules(self, data: object) -> None:
        """Replace the sites from a parsed JSON sites file (a list of site objects)."""
        if not isinstance(data, list):
            raise ValueError("sites file must hold a JSON list of site objects")
        self.set_sites([Site.from_json(obj) for obj in data])

    def _tls_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        base = self.ca.server_context(self.host)  # no or unknown SNI: a cert for the IP

        def choose(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            ctx = self._contexts.get(normalize_name(server_name or ""))
            if ctx is not None:
                sslobj.context = ctx
            return None

        base.sni_callback = choose
        return base

    # ----------------------------------------------------------------- requests

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name, port = _split_host(request.host)
        site = self._sites.get(normalize_name(name))
        if site is None or site.kind == "not_found":
            return _html(NOT_FOUND_HTML, 404)
        if site.kind == "redirect":
            target = normalize_name(site.redirect_to or site.name)
            raise web.HTTPFound(f"{request.scheme}://{target}{port}/",
                                headers={"Server": SERVER_HEADER})
        if site.kind == "large":
            return await self._large(request, site)
        if site.kind == "echo":
            return self._echo(request, site)
        if request.path not in ("/", "/index.html"):
            return _html(NOT_FOUND_HTML, 404)
        return _html(render_page(site), 200, site.headers)

    def _echo(self, request: web.Request, site: Site) -> web.Response:
        remote = request.remote or ""
        body = f"<!DOCTYPE html><html><head><title>Your address</title></head>" \
               f"<body><p>Your IP address is {html.escape(remote)}</p></body></html>\n"
        return _html(body, 200, (*site.headers, ("X-Client-IP", remote)))

    async def _large(self, request: web.Request, site: Site) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Server": SERVER_HEADER,
                                               "Content-Type": "application/octet-stream",
                                               **dict(site.headers)})
        response.content_length = site.size
        await response.prepare(request)
        block = _PATTERN * (_CHUNK // len(_PATTERN) + 1)
        sent = 0
        while sent < site.size and request.method != "HEAD":
            chunk = block[:min(_CHUNK, site.size - sent)]
            await asyncio.wait_for(response.write(chunk), self.write_timeout)
            sent += len(chunk)
        await response.write_eof()
        return response


def large_body(size: int) -> bytes:
    """The exact bytes a ``large`` site of ``size`` bytes sends (for checks)."""
    block = _PATTERN * (_CHUNK // len(_PATTERN) + 1)
    return b"".join(block[:min(_CHUNK, size - i)] for i in range(0, size, _CHUNK))


def _html(text: str, status: int, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers["Server"] = SERVER_HEADER
    for key, value in headers:
        response.headers[key] = value
    return response
