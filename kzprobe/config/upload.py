"""The ``[upload]`` section: opt-in submission to an OONI collector (off unless set)."""

from __future__ import annotations

from urllib.parse import urlsplit

from kzprobe.config.alerts import check_url
from kzprobe.config.model import UploadConfig
from kzprobe.config.network import _loopback_host
from kzprobe.config.section import MAX_TIMEOUT, _Section


def _collector_url(s: _Section, url: str) -> str:
    """An https base URL (plain http only to loopback: records would cross the ISP in clear
    text), without query or fragment (the spec's paths are appended to it)."""
    check_url(s.fail, "ooni_collector", url)
    parts = urlsplit(url)
    if parts.scheme == "http" and not _loopback_host(url):
        raise s.fail("ooni_collector", f"records would cross the network in plain http to "
                                       f"{url}: use https:// (plain http only to loopback)")
    if parts.query or parts.fragment:
        raise s.fail("ooni_collector", f"expected a base URL without ?query or #fragment, "
                                       f"got {url!r}")
    return url.rstrip("/")


def _parse_upload(s: _Section) -> UploadConfig:
    d = UploadConfig()
    url = s.string("ooni_collector", d.ooni_collector)
    if url:
        url = s.checked(lambda: _collector_url(s, url), d.ooni_collector)
    return UploadConfig(
        ooni_collector=url,
        timeout=s.number("timeout", d.timeout, maximum=MAX_TIMEOUT),
        max_backoff=s.number("max_backoff", d.max_backoff, maximum=MAX_TIMEOUT),
        max_in_flight=s.integer("max_in_flight", d.max_in_flight, maximum=64),
    )
