"""The request headers a probe sends, as OONI's probes do.

A leaf module: the HTTP step sends them and the control client forwards some of them in
its THRequest, so both import them from here (the control used to import the HTTP step).
"""

from __future__ import annotations

# OONI's default request headers (probe-cli internal/model/http.go).
REQUEST_HEADERS: tuple[tuple[str, str], ...] = (
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
)
