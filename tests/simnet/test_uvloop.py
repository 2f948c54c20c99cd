"""The same network under uvloop, the loop kzprobe itself may run on."""

from __future__ import annotations

import errno
import ssl

import pytest

from kzprobe.demo import DemoNetwork
from kzprobe.errors import classify
from kzprobe.simnet.common import parse_hostport
from kzprobe.simnet.pki import Pki

from .clients import tls_connect

uvloop = pytest.importorskip("uvloop")


async def _failures(pki: Pki) -> dict[str, object]:
    found: dict[str, object] = {}
    async with DemoNetwork(pki=pki) as net:
        ctx = ssl.create_default_context(cafile=str(net.ca_file))
        boxes = net.addresses()
        for box, name in (("sni_reset", "vpn.demo"), ("mitm", "social.demo")):
            address = parse_hostport(next(iter(boxes[box].values())))
            try:
                await tls_connect(address, name, ctx)
            except (OSError, ssl.SSLError) as exc:
                reset_errno = exc.errno if isinstance(exc, ConnectionResetError) else None
                found[box] = (classify(exc), reset_errno)
    return found


def test_demo_failures_under_uvloop(pki: Pki) -> None:
    """Under uvloop the RST keeps errno ECONNRESET and the MITM leaf an unknown authority."""
    found = uvloop.run(_failures(pki))
    assert found == {"sni_reset": ("connection_reset", errno.ECONNRESET),
                     "mitm": ("ssl_unknown_authority", None)}
