"""Fixtures for encrypted-DNS tests: unbound serving DoT and DoH on loopback (module-scoped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.dnsenc import servers


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[servers.Unbound]:
    if servers.UNBOUND is None:
        pytest.skip("unbound is not installed (apt-get install unbound)")
    with servers.unbound(tmp_path_factory.mktemp("unbound"), ca) as running:
        yield running
