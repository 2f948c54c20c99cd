"""The analysis worker starts with every measurement run: it must not import the network
libraries it never uses (aiohttp alone cost ~0.26 s of CPU at each start)."""

from __future__ import annotations

import subprocess
import sys


def test_the_analysis_worker_does_not_import_the_network_libraries() -> None:
    code = ("import sys, kzprobe.verdict.worker, kzprobe.config; "
            "print(sorted(m for m in ('aiohttp', 'aiodns', 'pycares', 'uvloop') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_classify_without_aiohttp_loaded_still_names_failures() -> None:
    """Without aiohttp imported, its exceptions cannot exist; the rest map as before."""
    code = ("import sys, errno; from kzprobe.errors import classify; "
            "print('aiohttp' in sys.modules, classify(ConnectionRefusedError("
            "errno.ECONNREFUSED, 'x')), classify(TimeoutError()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["False", "connection_refused", "generic_timeout_error"]
