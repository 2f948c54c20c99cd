"""The verdict modules stay pure: no asyncio, aiohttp or aiodns behind them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_analysis_loads_no_io_stack() -> None:
    """A fresh interpreter importing the analysis, bogon, failure-string and host:port modules,
    the experiment registry and its parameter validators loads no async I/O library."""
    code = ("import sys, kzprobe.verdict.analysis, kzprobe.bogons,"
            " kzprobe.verdict.analysis.interference, kzprobe.failures, kzprobe.netaddr,"
            " kzprobe.verdict.analysis.endpoints, kzprobe.measure.registry,"
            " kzprobe.measure.params;"
            "print(','.join(sorted(m for m in ('asyncio', 'aiohttp', 'aiodns', 'uvloop')"
            " if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == ""
