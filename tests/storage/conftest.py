"""The daemon fixtures of tests/service (a site, a daemon in a subprocess, a notify socket)."""

from tests.service.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    _fresh_logging,
    notify_socket,
    site,
    start_daemon,
)
