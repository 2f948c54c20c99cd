"""Fixtures for the simulated-network tests: one PKI per session, a web server per test."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest

from kzprobe.simnet.pki import Pki, process_pki
from kzprobe.simnet.web import Site, WebServer

SITES = (
    Site(name="news.demo", title="Demo News", body="An ordinary page."),
    Site(name="vpn.demo", title="Free VPN", body="Download our app."),
    Site(name="benign.demo", title="Benign"),
    Site(name="жаңалықтар.demo", title="Жаңалықтар"),
    Site(name="r1.demo", kind="redirect", redirect_to="r2.demo"),
    Site(name="r2.demo", kind="redirect", redirect_to="r3.demo"),
    Site(name="r3.demo", kind="redirect", redirect_to="news.demo"),
    Site(name="large.demo", kind="large", size=3 * 1024 * 1024 + 17),
    Site(name="small.demo", kind="large", size=256 * 1024),
    Site(name="echo.demo", kind="echo"),
    Site(name="missing.demo", kind="not_found"),
    Site(name="headers.demo", title="H", headers=(("X-Site", "headers"),)),
)


@pytest.fixture(scope="session")
def pki() -> Pki:
    return process_pki()


@pytest.fixture(scope="session")
def public_ctx(pki: Pki) -> ssl.SSLContext:
    """A probe's client context: trusts the public CA only."""
    return pki.public.client_context()


@pytest.fixture
async def web(pki: Pki) -> AsyncIterator[WebServer]:
    async with WebServer("127.0.0.1", SITES, ca=pki.public) as server:
        yield server
