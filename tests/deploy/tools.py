"""Finding the real Prometheus tools (Debian's prometheus, prometheus-alertmanager)."""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus", "amtool":
            "prometheus-alertmanager", "prometheus-alertmanager": "prometheus-alertmanager"}


def require(*tools: str) -> dict[str, str]:
    """Paths of ``tools``; skipped where missing, but a failure under CI=true (never green
    by accident)."""
    found = {tool: shutil.which(tool) for tool in tools}
    missing = sorted(tool for tool, path in found.items() if path is None)
    if missing:
        packages = " ".join(sorted({PACKAGES[t] for t in missing}))
        reason = f"missing {', '.join(missing)} (apt-get install {packages})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return {tool: str(path) for tool, path in found.items()}
